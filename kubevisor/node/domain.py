"""The node agent's handle on one running VMI: what its launcher's run dir offers to others.

The launcher owns QEMU and its main QMP monitor; the node agent uses the second one
(`qmp-access.sock`) for pause, resume, reset, screenshots, status and port forwards, the
guest agent socket for guest OS info and soft reboot, and the serial and VNC sockets for the
console and VNC sessions it relays. A `Domains` table holds one `Domain` per VMI and drops
it once its QEMU is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubevisor import procs
from kubevisor.hypervisor.guest_agent import GuestAgent
from kubevisor.hypervisor.model import LaunchEnv
from kubevisor.hypervisor.qmp import QMP, QMPUnavailable
from kubevisor.hypervisor.vm import qemu_record_path
from kubevisor.launcher import runner

QMP_TIMEOUT = 5.0
FORWARDS_FILE = "access-forwards.json"  # host ports the node agent added to this run's QEMU
# QEMU run states of a guest that is not running by request: paused, or never started
# (startStrategy Paused leaves QEMU in prelaunch until `cont`).
PAUSED_STATES = ("paused", "prelaunch")


class DomainError(RuntimeError):
    """A request the running domain cannot serve; `code` is the HTTP status to answer with."""

    def __init__(self, message: str, code: int = 409) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Forward:
    protocol: str  # tcp | udp
    host_port: int
    guest_port: int


@dataclass
class Domain:
    namespace: str
    name: str
    run_dir: Path
    _qmp: QMP | None = None
    _qmp_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _forwards: dict[tuple[str, int], Forward] = field(default_factory=dict)
    _forward_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    agent: GuestAgent = field(init=False)

    def __post_init__(self) -> None:
        self.agent = GuestAgent(self._env.guest_agent_socket)

    @property
    def _env(self) -> LaunchEnv:
        return LaunchEnv(accel="tcg", run_dir=self.run_dir)

    @property
    def serial_socket(self) -> Path:
        return self._env.serial_socket

    @property
    def vnc_socket(self) -> Path:
        return self._env.vnc_socket

    def info(self) -> runner.DomainInfo | None:
        return runner.read_domain_info(self.run_dir)

    def qemu_alive(self) -> bool:
        try:
            record = procs.read_record(qemu_record_path(self.run_dir))
        except ValueError:
            return False
        return record is not None and procs.is_alive(record)

    # -- QMP ---------------------------------------------------------------------------------
    async def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run a command on the access monitor, connecting (again) when needed."""
        async with self._qmp_lock:
            if self._qmp is None:
                if not self.qemu_alive():
                    raise DomainError(f"VMI {self.namespace}/{self.name} has no running domain")
                client = QMP(f"node-access-{self.name}")
                try:
                    await client.connect(self._env.access_qmp_socket, QMP_TIMEOUT, alive=self.qemu_alive)
                except QMPUnavailable as exc:
                    raise DomainError(f"cannot reach the domain's monitor: {exc}", 503) from None
                self._qmp = client
            qmp = self._qmp
        try:
            return await asyncio.wait_for(qmp.execute(command, arguments), QMP_TIMEOUT * 2)
        except Exception as exc:
            async with self._qmp_lock:
                if self._qmp is qmp:
                    self._qmp = None
            await qmp.close()
            if not self.qemu_alive():
                raise DomainError(f"VMI {self.namespace}/{self.name} has no running domain") from None
            raise DomainError(f"{command}: {exc}", 500) from None

    async def run_status(self) -> str:
        """QEMU's run state: running, paused, prelaunch, shutdown, guest-panicked ..."""
        status = await self.qmp("query-status")
        return str(status.get("status", ""))

    async def pause(self) -> None:
        await self.qmp("stop")

    async def resume(self) -> None:
        await self.qmp("cont")

    async def reset(self) -> None:
        await self.qmp("system_reset")

    async def screenshot(self) -> bytes:
        """The display as PNG (QEMU's screendump writes it; read and removed at once)."""
        target = self.run_dir / f"screenshot-{uuid.uuid4().hex}.png"
        try:
            await self.qmp("screendump", {"filename": str(target), "format": "png"})
            return await asyncio.to_thread(target.read_bytes)
        finally:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()

    # -- port forwards -----------------------------------------------------------------------
    async def forward(self, protocol: str, guest_port: int) -> Forward:
        """A loopback host port that reaches `guest_port` in the guest, added on first use."""
        async with self._forward_lock:
            known = self._forwards.get((protocol, guest_port))
            if known is not None:
                return known
            info = self.info()
            if info is None or not info.pod_netdev:
                raise DomainError(
                    f"VMI {self.namespace}/{self.name} has no pod network interface to forward to"
                )
            for declared in info.ports:
                if declared.protocol == protocol and declared.guest_port == guest_port:
                    fwd = Forward(protocol, declared.host_port, guest_port)
                    self._forwards[(protocol, guest_port)] = fwd
                    return fwd
            added = self._recorded_forwards().get((protocol, guest_port))
            if added is not None:  # added by an earlier node agent: QEMU still has it
                self._forwards[(protocol, guest_port)] = added
                return added
            kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
            last = ""
            for _attempt in range(5):
                host_port = runner.free_port("127.0.0.1", kind)
                line = (f"hostfwd_add {info.pod_netdev} "
                        f"{protocol}:127.0.0.1:{host_port}-{info.guest_address}:{guest_port}")
                out = str(await self.qmp("human-monitor-command", {"command-line": line}) or "")
                if not out.strip():
                    fwd = Forward(protocol, host_port, guest_port)
                    self._forwards[(protocol, guest_port)] = fwd
                    self._record_forwards()
                    return fwd
                last = out.strip()
            raise DomainError(f"cannot forward {protocol} port {guest_port}: {last}", 500)

    def _recorded_forwards(self) -> dict[tuple[str, int], Forward]:
        """Forwards this run's QEMU has from earlier node agents (they outlive the agent)."""
        try:
            doc = json.loads((self.run_dir / FORWARDS_FILE).read_text())
            found = [Forward(str(f["protocol"]), int(f["hostPort"]), int(f["guestPort"])) for f in doc]
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        return {(f.protocol, f.guest_port): f for f in found}

    def _record_forwards(self) -> None:
        known = {**self._recorded_forwards(), **self._forwards}
        doc = [{"protocol": f.protocol, "hostPort": f.host_port, "guestPort": f.guest_port}
               for f in known.values()]
        tmp = self.run_dir / (FORWARDS_FILE + ".tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        tmp.replace(self.run_dir / FORWARDS_FILE)

    async def close(self) -> None:
        qmp, self._qmp = self._qmp, None
        if qmp is not None:
            await qmp.close()
        await self.agent.close()


class Domains:
    """One Domain per running VMI on this node, found by its run dir."""

    def __init__(self) -> None:
        self._domains: dict[tuple[str, str], Domain] = {}

    async def get(self, namespace: str, name: str, uid: str = "") -> Domain:
        """The running domain of a VMI; DomainError (409) when it does not run here, RunError for a
        namespace or name that is not a DNS label (it never becomes a path)."""
        key = (namespace, name)
        domain = self._domains.get(key)
        if domain is None or not domain.qemu_alive():
            if domain is not None:
                await self.forget(key)
            runner.vmi_key({"metadata": {"namespace": namespace, "name": name}})  # validates both
            domain = Domain(namespace, name, runner.run_dir_for(namespace, name))
            if not domain.qemu_alive():
                raise DomainError(f"VMI {namespace}/{name} is not running on this node")
            self._domains[key] = domain
        info = domain.info()
        if uid and info is not None and info.uid and info.uid != uid:
            raise DomainError(f"VMI {namespace}/{name} (uid {uid}) is not the one running on this node")
        return domain

    async def forget(self, key: tuple[str, str]) -> None:
        domain = self._domains.pop(key, None)
        if domain is not None:
            await domain.close()

    async def close(self) -> None:
        for key in list(self._domains):
            await self.forget(key)
