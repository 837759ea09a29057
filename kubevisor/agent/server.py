"""The in-guest agent: containers through crun, stdio relayed as DATA frames, exit codes reported.

Standard library only. One reader thread decodes frames; each REQUEST runs on its own thread
(``wait`` and ``attach`` block for as long as a process lives). Output a process writes before
anyone attaches is buffered and replayed on attach, so create → attach → start loses nothing.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import protocol as p
from .procs import Reaper, run, spawn

BUFFER_LIMIT = 4 * 1024 * 1024
DRAIN_AFTER_EXIT = 1.0  # seconds to wait for output EOF once a process has exited


class AgentError(Exception):
    """A request failed; the message goes back to the host verbatim."""


@dataclass
class Output:
    """What a process wrote while nobody was attached."""

    chunks: list[tuple[int, bytes]] = field(default_factory=list)  # (flags, data)
    size: int = 0

    def add(self, flags: int, data: bytes) -> None:
        self.chunks.append((flags, data))
        self.size += len(data)
        while self.size > BUFFER_LIMIT and self.chunks:
            self.size -= len(self.chunks.pop(0)[1])


@dataclass
class Process:
    container_id: str
    exec_id: str
    pid: int = 0
    terminal: bool = False
    stdin_fd: int = -1
    out_fds: dict[int, int] = field(default_factory=dict)  # fd -> flags (0 stdout, FLAG_STDERR)
    exit_status: int | None = None
    open_outputs: int = 0
    output: Output = field(default_factory=Output)
    attached: int = 0  # stream id of the attached client, 0 if none
    finished: bool = False  # exit status known and output drained (or given up on)
    cond: threading.Condition = field(default_factory=threading.Condition)


@dataclass
class Container:
    id: str
    bundle: Path
    init: Process
    status: str = "created"
    execs: dict[str, Process] = field(default_factory=dict)


class Agent:
    def __init__(
        self, fd_in: int, fd_out: int, run_dir: Path, crun: str = "crun", crun_args: tuple[str, ...] = ()
    ) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.run_dir = run_dir
        self.crun = crun
        self.crun_args = crun_args
        self.crun_root = run_dir / "crun"
        self.reaper = Reaper()
        self.write_lock = threading.Lock()
        self.lock = threading.Lock()
        self.containers: dict[str, Container] = {}
        self.streams: dict[int, Process] = {}  # attached stream -> process
        self.hostname = ""

    # ---- transport -------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        with self.write_lock:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self.fd_out, view)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                view = view[n:]

    def respond(self, stream: int, result: dict[str, Any]) -> None:
        self.send(p.encode_json(stream, p.RESPONSE, {"ok": True, **result}))

    def fail(self, stream: int, message: str) -> None:
        self.send(p.encode_json(stream, p.RESPONSE, {"ok": False, "error": message}))

    def serve(self) -> None:
        self.send(p.encode_json(0, p.HELLO, {"version": p.PROTOCOL_VERSION}))
        decoder = p.FrameDecoder()
        while True:
            try:
                data = os.read(self.fd_in, 65536)
            except InterruptedError:
                continue
            if not data:
                # A virtio port reads EOF while the host side is disconnected; a socket means done.
                if isinstance(self.fd_in, int) and _is_socket(self.fd_in):
                    return
                time.sleep(0.1)
                continue
            for frame in decoder.feed(data):
                self.dispatch(frame)

    def dispatch(self, frame: p.Frame) -> None:
        if frame.type == p.REQUEST:
            # attach never blocks and must be registered before the stream's stdin DATA frames
            # (read right after it) arrive, so it runs inline; everything else gets a thread.
            if b'"op":"attach"' in frame.payload:
                self.handle(frame)
            else:
                threading.Thread(target=self.handle, args=(frame,), daemon=True).start()
        elif frame.type == p.DATA:
            self.stdin_data(frame)
        elif frame.type == p.CANCEL:
            with self.lock:
                proc = self.streams.pop(frame.stream, None)
            if proc is not None:
                with proc.cond:
                    if proc.attached == frame.stream:
                        proc.attached = 0

    def handle(self, frame: p.Frame) -> None:
        try:
            req = frame.json()
            op = req.get("op")
            method: Callable[[int, dict[str, Any]], dict[str, Any] | None] | None = (
                getattr(self, f"op_{op}", None) if isinstance(op, str) else None
            )
            if method is None:
                raise AgentError(f"unknown op {op!r}")
            result = method(frame.stream, req)
            if result is not None:
                self.respond(frame.stream, result)
        except (AgentError, p.ProtocolError, OSError, ValueError, KeyError) as exc:
            self.fail(frame.stream, str(exc) or type(exc).__name__)

    # ---- helpers ---------------------------------------------------------------------------

    def container(self, req: dict[str, Any]) -> Container:
        cid = req.get("container_id")
        with self.lock:
            ctr = self.containers.get(cid) if isinstance(cid, str) else None
        if ctr is None:
            raise AgentError(f"container {cid!r} does not exist")
        return ctr

    def process(self, req: dict[str, Any]) -> Process:
        ctr = self.container(req)
        exec_id = req.get("exec_id") or ""
        if not exec_id:
            return ctr.init
        proc = ctr.execs.get(exec_id)
        if proc is None:
            raise AgentError(f"process {exec_id!r} of container {ctr.id!r} does not exist")
        return proc

    def crun_cmd(self, *args: str) -> list[str]:
        return [self.crun, "--root", str(self.crun_root), *self.crun_args, *args]

    def crun_run(self, *args: str) -> str:
        status, out = run(self.reaper, self.crun_cmd(*args))
        if status != 0:
            raise AgentError(f"crun {args[0]}: {out.strip() or f'exit status {status}'}")
        return out

    def start_io(
        self, proc: Process, terminal: bool
    ) -> tuple[list[int], Callable[[], int] | None, str | None]:
        """Create the process's stdio. Returns the fds to give crun, and for terminals a function
        that returns the pty master once crun has sent it."""
        if terminal:
            sock_path = self.run_dir / "console" / f"{proc.container_id}-{proc.exec_id or 'init'}.sock"
            sock_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                sock_path.unlink()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(sock_path))
            listener.listen(1)
            listener.settimeout(120)
            box: dict[str, int] = {}

            def receive() -> int:
                try:
                    conn, _ = listener.accept()
                    with conn:
                        fds = array.array("i")
                        _, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(4))
                        for level, kind, data in anc:
                            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                                fds.frombytes(data[: len(data) - (len(data) % 4)])
                    if not fds:
                        raise AgentError("crun sent no terminal over the console socket")
                    box["fd"] = fds[0]
                    return fds[0]
                finally:
                    listener.close()
                    with contextlib.suppress(FileNotFoundError):
                        sock_path.unlink()

            proc.terminal = True
            return [], receive, str(sock_path)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        proc.stdin_fd = in_w
        proc.out_fds = {out_r: 0, err_r: p.FLAG_STDERR}
        return [in_r, out_w, err_w], None, None

    def pump(self, proc: Process, fd: int, flags: int) -> None:
        """Copy one output fd of a process to its attached stream, or buffer it."""
        while True:
            try:
                data = os.read(fd, 65536)
            except InterruptedError:
                continue
            except OSError:  # EIO: the pty's last slave closed
                data = b""
            with proc.cond:
                if data:
                    if proc.attached:
                        self.send(p.encode(proc.attached, p.DATA, data, flags))
                    else:
                        proc.output.add(flags, data)
                    continue
                proc.open_outputs -= 1
                proc.cond.notify_all()
            break
        with contextlib.suppress(OSError):
            os.close(fd)

    def watch(self, proc: Process) -> None:
        """Wait for the process to exit, let its output drain, then tell whoever is attached."""
        status = self.reaper.wait(proc.pid)
        with proc.cond:
            proc.exit_status = status
            deadline = time.monotonic() + DRAIN_AFTER_EXIT
            while proc.open_outputs > 0 and time.monotonic() < deadline:
                proc.cond.wait(0.05)
            proc.finished = True
            proc.cond.notify_all()
            stream = proc.attached
            proc.attached = 0
        if proc.exec_id == "":
            ctr = self.containers.get(proc.container_id)
            if ctr is not None:
                ctr.status = "stopped"
        if proc.stdin_fd >= 0 and not proc.terminal:
            with contextlib.suppress(OSError):
                os.close(proc.stdin_fd)
            proc.stdin_fd = -1
        if stream:
            with self.lock:
                self.streams.pop(stream, None)
            self.respond(stream, {"exit_status": status})

    def launch(
        self, proc: Process, argv_for: Callable[[str | None], list[str]], pid_file: Path, terminal: bool
    ) -> None:
        """Run a crun create/exec command that leaves `proc` running, and start relaying it."""
        child_fds, receive, console = self.start_io(proc, terminal)
        argv = argv_for(console)
        master: dict[str, int] = {}
        receiver: threading.Thread | None = None
        errors: list[BaseException] = []
        if receive is not None:

            def _recv() -> None:
                try:
                    master["fd"] = receive()
                except BaseException as exc:  # reported after crun finishes
                    errors.append(exc)

            receiver = threading.Thread(target=_recv, daemon=True)
            receiver.start()
        log_r, log_w = os.pipe()
        try:
            if child_fds:
                pid = spawn(argv, stdin=child_fds[0], stdout=child_fds[1], stderr=child_fds[2])
            else:
                pid = spawn(argv, stdout=log_w, stderr=log_w)
        finally:
            os.close(log_w)
            for fd in child_fds:
                os.close(fd)
        status = self.reaper.wait(pid, 300)
        with os.fdopen(log_r, "rb") as f:
            crun_out = f.read().decode(errors="replace").strip() if not child_fds else ""
        if status != 0:
            # crun wrote its error to the process's stderr pipe (no terminal) or to our log pipe.
            err = crun_out
            if not err:
                err = self._drain_now(proc)
            self._close_io(proc)
            if receiver is not None and console:
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as poke:
                    poke.connect(console)  # unblocks the receiver's accept()
            raise AgentError(f"crun: {err or f'exit status {status}'}")
        if receiver is not None:
            receiver.join(30)
            if "fd" not in master:
                raise AgentError(f"no terminal from crun: {errors[0] if errors else 'timeout'}")
            proc.stdin_fd = master["fd"]
            proc.out_fds = {os.dup(master["fd"]): 0}
        proc.pid = int(pid_file.read_text().strip())
        proc.open_outputs = len(proc.out_fds)
        for fd, flags in proc.out_fds.items():
            threading.Thread(target=self.pump, args=(proc, fd, flags), daemon=True).start()
        threading.Thread(target=self.watch, args=(proc,), daemon=True).start()

    def _drain_now(self, proc: Process) -> str:
        text = []
        for fd in list(proc.out_fds):
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError):
                while chunk := os.read(fd, 65536):
                    text.append(chunk.decode(errors="replace"))
        return "".join(text).strip()

    def _close_io(self, proc: Process) -> None:
        for fd in [proc.stdin_fd, *proc.out_fds]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        proc.stdin_fd = -1
        proc.out_fds = {}

    # ---- operations ------------------------------------------------------------------------

    def op_ping(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        return {"version": p.PROTOCOL_VERSION}

    def op_create_sandbox(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        hostname = req.get("hostname")
        if isinstance(hostname, str) and hostname and os.getpid() == 1:
            socket.sethostname(hostname[:63])
        self.hostname = hostname or ""
        return {}

    def op_create_container(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        cid = req["container_id"]
        config = req["config"]
        if not isinstance(cid, str) or not cid or "/" in cid or cid.startswith("."):
            raise AgentError(f"invalid container_id {cid!r}")
        if not isinstance(config, dict):
            raise AgentError("config must be an object")
        with self.lock:
            if cid in self.containers:
                raise AgentError(f"container {cid!r} already exists")
            bundle = self.run_dir / "bundles" / cid
            ctr = Container(cid, bundle, Process(cid, ""))
            self.containers[cid] = ctr
        try:
            bundle.mkdir(parents=True, exist_ok=True)
            (bundle / "config.json").write_text(json.dumps(config))
            pid_file = bundle / "init.pid"
            terminal = bool(config.get("process", {}).get("terminal"))

            def argv(console: str | None) -> list[str]:
                extra = ["--console-socket", console] if console else []
                return self.crun_cmd(
                    "create", "--no-pivot", "--bundle", str(bundle), "--pid-file", str(pid_file), *extra, cid
                )

            self.launch(ctr.init, argv, pid_file, terminal)
        except BaseException:
            with self.lock:
                self.containers.pop(cid, None)
            run(self.reaper, self.crun_cmd("delete", "--force", cid))
            shutil.rmtree(bundle, ignore_errors=True)
            raise
        return {"pid": ctr.init.pid}

    def op_start_container(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        ctr = self.container(req)
        if ctr.status != "created":
            raise AgentError(f"container {ctr.id!r} is {ctr.status}, not created")
        self.crun_run("start", ctr.id)
        if ctr.status == "created":
            ctr.status = "running"
        return {}

    def op_exec_process(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        ctr = self.container(req)
        exec_id = req["exec_id"]
        spec = req["process"]
        if not isinstance(exec_id, str) or not exec_id or "/" in exec_id:
            raise AgentError(f"invalid exec_id {exec_id!r}")
        if ctr.status != "running":
            raise AgentError(f"container {ctr.id!r} is {ctr.status}, not running")
        proc = Process(ctr.id, exec_id)
        with self.lock:
            if exec_id in ctr.execs:
                raise AgentError(f"process {exec_id!r} already exists")
            ctr.execs[exec_id] = proc
        proc_file = ctr.bundle / f"exec-{exec_id}.json"
        pid_file = ctr.bundle / f"exec-{exec_id}.pid"
        proc_file.write_text(json.dumps(spec))

        def argv(console: str | None) -> list[str]:
            extra = ["--console-socket", console] if console else []
            return self.crun_cmd(
                "exec", "--detach", "--process", str(proc_file), "--pid-file", str(pid_file), *extra, ctr.id
            )

        try:
            self.launch(proc, argv, pid_file, bool(spec.get("terminal")))
        except BaseException:
            ctr.execs.pop(exec_id, None)
            raise
        return {"pid": proc.pid}

    def op_attach(self, stream: int, req: dict[str, Any]) -> dict[str, Any] | None:
        """Stream the process's output to this stream; the response comes when it exits."""
        proc = self.process(req)
        with proc.cond:
            if proc.attached:
                raise AgentError("process already has a client attached")
            for flags, data in proc.output.chunks:
                self.send(p.encode(stream, p.DATA, data, flags))
            proc.output = Output()
            if proc.finished:
                return {"exit_status": proc.exit_status}
            proc.attached = stream
        with self.lock:
            self.streams[stream] = proc
        return None

    def stdin_data(self, frame: p.Frame) -> None:
        with self.lock:
            proc = self.streams.get(frame.stream)
        if proc is None or proc.stdin_fd < 0:
            return
        try:
            if frame.payload:
                os.write(proc.stdin_fd, frame.payload)
            if frame.flags & p.FLAG_EOF:
                if proc.terminal:
                    os.write(proc.stdin_fd, b"\x04")
                else:
                    os.close(proc.stdin_fd)
                    proc.stdin_fd = -1
        except OSError:
            pass

    def op_close_stdin(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.process(req)
        if proc.stdin_fd >= 0 and not proc.terminal:
            os.close(proc.stdin_fd)
            proc.stdin_fd = -1
        return {}

    def op_write_stdin(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.process(req)
        data = str(req.get("data", "")).encode()
        if proc.stdin_fd < 0:
            raise AgentError("stdin is closed")
        os.write(proc.stdin_fd, data)
        return {"len": len(data)}

    def op_resize(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.process(req)
        if not proc.terminal or proc.stdin_fd < 0:
            raise AgentError("process has no terminal")
        rows, cols = int(req["rows"]), int(req["cols"])
        fcntl.ioctl(proc.stdin_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        return {}

    def op_signal(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.process(req)
        sig = int(req["signal"])
        if req.get("all") and not req.get("exec_id"):
            self.crun_run("kill", "--all", proc.container_id, str(sig))
            return {}
        if proc.finished or proc.exit_status is not None or proc.pid <= 0:
            raise AgentError(f"process of container {proc.container_id!r} is not running")
        os.kill(proc.pid, sig)
        return {}

    def op_wait(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.process(req)
        with proc.cond:
            while not proc.finished:
                proc.cond.wait(1.0)
            return {"exit_status": proc.exit_status}

    def op_state(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        ctr = self.container(req)
        proc = ctr.init
        return {
            "status": ctr.status,
            "pid": proc.pid,
            "exit_status": proc.exit_status,
            "execs": {k: v.exit_status for k, v in ctr.execs.items()},
        }

    def op_list(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {"containers": {cid: c.status for cid, c in self.containers.items()}}

    def op_ps(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        ctr = self.container(req)
        pids = [ctr.init.pid] if ctr.init.exit_status is None and ctr.init.pid else []
        pids += [e.pid for e in ctr.execs.values() if e.exit_status is None and e.pid]
        cgroup = self._cgroup_dir(ctr.id)
        if cgroup is not None:
            with contextlib.suppress(OSError):
                pids = [int(x) for x in (cgroup / "cgroup.procs").read_text().split()]
        return {"pids": pids}

    def _cgroup_dir(self, cid: str) -> Path | None:
        base = Path("/sys/fs/cgroup/kubevisor") / cid
        return base if base.is_dir() else None

    def op_stats(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        ctr = self.container(req)
        stats: dict[str, Any] = {}
        cgroup = self._cgroup_dir(ctr.id)
        if cgroup is not None:
            for name in ("memory.current", "memory.max", "pids.current"):
                with contextlib.suppress(OSError, ValueError):
                    raw = (cgroup / name).read_text().strip()
                    stats[name] = raw if raw == "max" else int(raw)
            with contextlib.suppress(OSError):
                for line in (cgroup / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    stats[f"cpu.{key}"] = int(value)
        with contextlib.suppress(OSError):
            for line in Path("/proc/meminfo").read_text().splitlines()[:3]:
                key, _, value = line.partition(":")
                stats[f"guest.{key}"] = int(value.split()[0]) * 1024
        return {"stats": stats}

    def op_pause(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        ctr = self.container(req)
        self.crun_run("pause", ctr.id)
        ctr.status = "paused"
        return {}

    def op_resume(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        ctr = self.container(req)
        self.crun_run("resume", ctr.id)
        ctr.status = "running"
        return {}

    def op_update(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        ctr = self.container(req)
        res_file = ctr.bundle / "update.json"
        res_file.write_text(json.dumps(req["resources"]))
        self.crun_run("update", "--resources", str(res_file), ctr.id)
        return {}

    def op_remove_container(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        ctr = self.container(req)
        if ctr.init.exit_status is None and ctr.init.pid and not req.get("force"):
            raise AgentError(f"container {ctr.id!r} is still running")
        run(self.reaper, self.crun_cmd("delete", "--force", ctr.id))
        for proc in [ctr.init, *ctr.execs.values()]:
            with proc.cond:
                while not proc.finished and proc.pid:
                    if not proc.cond.wait(10):
                        break
            if proc.terminal:
                self._close_io(proc)
        with self.lock:
            self.containers.pop(ctr.id, None)
        shutil.rmtree(ctr.bundle, ignore_errors=True)
        return {}

    def op_destroy_sandbox(self, stream: int, req: dict[str, Any]) -> dict[str, Any]:
        for cid in list(self.containers):
            with contextlib.suppress(AgentError, OSError):
                self.op_remove_container(stream, {"container_id": cid, "force": True})
        os.sync()
        return {}


def _is_socket(fd: int) -> bool:
    import stat

    return stat.S_ISSOCK(os.fstat(fd).st_mode)


def find_port(name: str = p.AGENT_PORT_NAME, timeout: float = 30.0) -> Path:
    """The /dev node of the virtio-serial port called `name` (no udev: look it up in sysfs)."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in sorted(Path("/sys/class/virtio-ports").glob("*")):
            with contextlib.suppress(OSError):
                if (entry / "name").read_text().strip() == name:
                    return Path("/dev") / entry.name
        if time.monotonic() > deadline:
            raise AgentError(f"virtio-serial port {name!r} not found")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="kubevisor-agent")
    parser.add_argument("--listen", help="serve one client on this unix socket (host-side testing)")
    parser.add_argument("--run-dir", default="/run/kv")
    parser.add_argument("--crun", default="crun")
    parser.add_argument(
        "--crun-arg",
        action="append",
        default=[],
        help="extra global crun flag (host tests: --cgroup-manager=disabled)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if os.getpid() != 1:
        from .procs import set_subreaper

        set_subreaper()
    if args.listen:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(args.listen)
        listener.listen(1)
        conn, _ = listener.accept()
        fd = conn.detach()
        Agent(fd, fd, run_dir, args.crun, tuple(args.crun_arg)).serve()
        return 0
    port = find_port()
    fd = os.open(port, os.O_RDWR | os.O_CLOEXEC)
    Agent(fd, fd, run_dir, args.crun, tuple(args.crun_arg)).serve()
    return 0
