"""Per-sandbox monitor process: owns virtiofsd and QEMU, and multiplexes agent clients.

`python -m kubevisor.sandbox.monitor VM_DIR` (started detached by `Sandbox.create`). It starts
virtiofsd and QEMU (recording both as pid + start time in VM_DIR/procs.json), connects to the
agent's virtio-serial chardev, waits for the agent's HELLO, then listens on VM_DIR/agent.sock.
Each client connection speaks the agent protocol with its own stream ids; the monitor rewrites
them to unique ids on the shared port (kata-proxy's job, without yamux). Boot and "attach to the
agent" are separate steps so that a VM restored from a snapshot can skip the boot.

It exits, taking QEMU and virtiofsd down, on SIGTERM or when QEMU goes away; clients then see EOF.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubevisor.agent import protocol as p
from kubevisor.sandbox.pidrec import ProcRecord
from kubevisor.sandbox.vmconfig import VMConfig, VMPaths, qemu_argv, virtiofsd_argv

BOOT_TIMEOUT = 180.0


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} monitor[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


class Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = p.FrameDecoder()
        self.streams: dict[int, int] = {}  # local id -> global id


class Monitor:
    def __init__(self, vm_dir: Path) -> None:
        self.paths = VMPaths(vm_dir)
        self.cfg = VMConfig.from_json(json.loads((vm_dir / "vm.json").read_text()))
        self.qemu: subprocess.Popen[bytes] | None = None
        self.virtiofsd: subprocess.Popen[bytes] | None = None
        self.serial: socket.socket | None = None
        self.sel = selectors.DefaultSelector()
        self.clients: dict[socket.socket, Client] = {}
        self.routes: dict[int, tuple[Client, int]] = {}  # global id -> (client, local id)
        self.ids = itertools.count(1, 2)
        self.stopping = False

    # ---- boot ------------------------------------------------------------------------------

    def record(self) -> None:
        procs: dict[str, Any] = {}
        for name, proc in (("qemu", self.qemu), ("virtiofsd", self.virtiofsd)):
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    procs[name] = ProcRecord.of(proc.pid).to_json()
        tmp = self.paths.dir / "procs.json.tmp"
        tmp.write_text(json.dumps(procs))
        os.replace(tmp, self.paths.dir / "procs.json")

    def boot(self) -> None:
        self.paths.shared.mkdir(parents=True, exist_ok=True)
        with open(self.paths.dir / "virtiofsd.log", "ab") as vlog:
            self.virtiofsd = subprocess.Popen(
                virtiofsd_argv(self.cfg, self.paths), stdin=subprocess.DEVNULL, stdout=vlog, stderr=vlog
            )
        self.record()
        self._wait_for(self.paths.virtiofsd_socket, self.virtiofsd, "virtiofsd")
        with open(self.paths.dir / "qemu.log", "ab") as qlog:
            self.qemu = subprocess.Popen(
                qemu_argv(self.cfg, self.paths), stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog
            )
        self.record()

    def _wait_for(self, path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
        deadline = time.monotonic() + 30
        while not path.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not create {path}")
            time.sleep(0.01)

    def attach_agent(self) -> None:
        """Connect to the agent's port and wait for its HELLO."""
        assert self.qemu is not None
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            if self.qemu.poll() is not None:
                raise RuntimeError(f"QEMU exited with status {self.qemu.returncode} during boot")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.paths.agent_serial))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise RuntimeError("QEMU's agent socket never appeared") from None
                time.sleep(0.02)
        sock.settimeout(0.5)
        decoder = p.FrameDecoder()
        while True:
            if self.qemu.poll() is not None:
                raise RuntimeError(f"QEMU exited with status {self.qemu.returncode} during boot")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the guest agent did not start within {BOOT_TIMEOUT:.0f}s")
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise RuntimeError("the agent port closed during boot")
            frames = decoder.feed(data)
            if any(f.type == p.HELLO for f in frames):
                break
        sock.settimeout(None)
        self.serial = sock
        self.serial_decoder = decoder

    # ---- mux -------------------------------------------------------------------------------

    def listen(self) -> socket.socket:
        tmp = self.paths.dir / "agent.sock.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp))
        listener.listen(64)
        os.replace(tmp, self.paths.agent_socket)  # appears only once the agent answers
        return listener

    def to_agent(self, data: bytes) -> None:
        assert self.serial is not None
        self.serial.sendall(data)

    def from_client(self, client: Client, frame: p.Frame) -> None:
        if frame.type == p.REQUEST:
            gid = next(self.ids)
            client.streams[frame.stream] = gid
            self.routes[gid] = (client, frame.stream)
        gid_opt = client.streams.get(frame.stream)
        if gid_opt is None or frame.type not in (p.REQUEST, p.DATA, p.CANCEL):
            return
        self.to_agent(p.encode(gid_opt, frame.type, frame.payload, frame.flags))

    def from_agent(self, frame: p.Frame) -> None:
        route = self.routes.get(frame.stream)
        if route is None:
            return
        client, local = route
        if frame.type == p.RESPONSE:
            del self.routes[frame.stream]
            client.streams.pop(local, None)
        try:
            client.sock.sendall(p.encode(local, frame.type, frame.payload, frame.flags))
        except OSError:
            self.drop(client)

    def drop(self, client: Client) -> None:
        if client.sock not in self.clients:
            return
        del self.clients[client.sock]
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(client.sock)
        client.sock.close()
        for gid in client.streams.values():
            self.routes.pop(gid, None)
            with contextlib.suppress(OSError):
                self.to_agent(p.encode(gid, p.CANCEL))
        client.streams.clear()

    def serve(self) -> None:
        assert self.serial is not None and self.qemu is not None
        listener = self.listen()
        self.sel.register(listener, selectors.EVENT_READ, "listener")
        self.sel.register(self.serial, selectors.EVENT_READ, "serial")
        # Frames that arrived together with HELLO.
        while not self.stopping:
            if self.qemu.poll() is not None:
                log(f"QEMU exited with status {self.qemu.returncode}")
                return
            for key, _ in self.sel.select(timeout=0.5):
                if key.data == "listener":
                    conn, _ = listener.accept()
                    client = Client(conn)
                    self.clients[conn] = client
                    self.sel.register(conn, selectors.EVENT_READ, client)
                elif key.data == "serial":
                    data = self.serial.recv(262144)
                    if not data:
                        log("agent port closed")
                        return
                    for frame in self.serial_decoder.feed(data):
                        self.from_agent(frame)
                else:
                    client = key.data
                    try:
                        data = client.sock.recv(262144)
                    except OSError:
                        data = b""
                    if not data:
                        self.drop(client)
                        continue
                    try:
                        for frame in client.decoder.feed(data):
                            self.from_client(client, frame)
                    except p.ProtocolError as exc:
                        log(f"dropping client: {exc}")
                        self.drop(client)

    # ---- teardown --------------------------------------------------------------------------

    def shutdown(self) -> None:
        for client in list(self.clients.values()):
            self.drop(client)
        for proc in (self.qemu, self.virtiofsd):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for path in (
            self.paths.agent_socket,
            self.paths.agent_serial,
            self.paths.qmp,
            self.paths.virtiofsd_socket,
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    vm_dir = Path(args[0])
    monitor = Monitor(vm_dir)

    def stop(signum: int, _frame: object) -> None:
        monitor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    status = 0
    try:
        monitor.boot()
        monitor.attach_agent()
        log("agent ready")
        monitor.serve()
    except Exception as exc:
        log(f"error: {exc}")
        (vm_dir / "error").write_text(str(exc))
        status = 1
    finally:
        monitor.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
