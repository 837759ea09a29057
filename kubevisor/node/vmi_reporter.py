"""Keeps the node's part of each running VMI's status in step with its domain (level-triggered).

Every `interval` seconds, and at once after `trigger(ns, name)` (pause, unpause ...), each VMI
whose QEMU runs on this node is looked at: QEMU's run state, the accelerator, whether the
guest agent answers and what it says (OS, interfaces). The VMI comes from the node's informer
(VMIs labelled `kubevirt.io/nodeName=<node>`, as virt-handler watches them), and the status is
written only when it changed (`kubevisor.node.vmi_status`), so an idle node makes no requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kubevisor.controller.base import timestamp
from kubevisor.controller.informer import Informer
from kubevisor.controller.kube import VMIS, ApiError, Kube
from kubevisor.hypervisor.guest_agent import GuestAgentError
from kubevisor.launcher import runner
from kubevisor.node.domain import PAUSED_STATES, Domain, DomainError, Domains
from kubevisor.node.guest_info import guest_interfaces, os_info
from kubevisor.node.vmi_status import DomainFacts, node_vmi_status

log = logging.getLogger(__name__)

INTERVAL = 5.0
AGENT_TIMEOUT = 2.0


class VMIStatusReporter:
    def __init__(
        self, kube: Kube, vmis: Informer, domains: Domains, node_name: str, pod_ip: str,
        interval: float = INTERVAL,
    ) -> None:
        self.kube = kube
        self.vmis = vmis
        self.domains = domains
        self.node_name = node_name
        self.pod_ip = pod_ip
        self.interval = interval
        self._wake = asyncio.Event()
        self._urgent: set[tuple[str, str]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def trigger(self, namespace: str, name: str) -> None:
        """Sync this VMI now (safe from any thread)."""

        def mark() -> None:
            self._urgent.add((namespace, name))
            self._wake.set()

        if self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            mark()
        else:
            self._loop.call_soon_threadsafe(mark)

    def running_here(self) -> list[tuple[str, str]]:
        """(namespace, name) of every run dir on this node whose QEMU is alive."""
        found: list[tuple[str, str]] = []
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(runner.vms_dir().iterdir()):
                ns, sep, name = entry.name.partition("_")
                if sep and Domain(ns, name, entry).qemu_alive():
                    found.append((ns, name))
        return found

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            urgent, self._urgent = self._urgent, set()
            keys = urgent if urgent else set(self.running_here())
            for ns, name in sorted(keys):
                try:
                    await self.sync(ns, name)
                except Exception as exc:  # one VMI's trouble must not stop the others
                    log.warning("VMI %s/%s status: %s", ns, name, exc)
            if self._urgent:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def facts(self, domain: Domain) -> DomainFacts:
        state = await domain.run_status()
        info = domain.info()
        connected, osinfo, ifaces = False, {}, []
        if state == "running":
            try:
                await domain.agent.execute("guest-ping", timeout=AGENT_TIMEOUT)
                connected = True
                osinfo = os_info(await domain.agent.execute("guest-get-osinfo", timeout=AGENT_TIMEOUT))
                ifaces = guest_interfaces(
                    await domain.agent.execute("guest-network-get-interfaces", timeout=AGENT_TIMEOUT))
            except GuestAgentError:
                pass
        return DomainFacts(
            paused=state in PAUSED_STATES,
            accel=info.accel if info is not None else "",
            agent_connected=connected,
            pod_ip=self.pod_ip,
            os_info=osinfo,
            guest_interfaces=ifaces,
        )

    async def sync(self, namespace: str, name: str) -> None:
        vmi = self.vmis.store.get(f"{namespace}/{name}")
        if vmi is None:
            return
        try:
            domain = await self.domains.get(namespace, name)
            facts = await self.facts(domain)
        except (DomainError, runner.RunError):
            return
        info = domain.info()
        for _attempt in range(5):
            status = vmi.get("status") or {}
            if status.get("phase") != "Running" or status.get("nodeName") not in (None, self.node_name):
                return
            if info is not None and info.uid and info.uid != vmi["metadata"].get("uid"):
                return
            new = node_vmi_status(vmi, facts, timestamp())
            if new == status:
                return
            vmi["status"] = new
            try:
                await asyncio.to_thread(self.kube.replace, VMIS, vmi)
                return
            except ApiError as exc:
                if not exc.conflict:
                    raise
            try:  # the cache is behind the write that won: read that one
                vmi = await asyncio.to_thread(self.kube.get, VMIS, namespace, name)
            except ApiError as exc:
                if exc.not_found:
                    return
                raise
