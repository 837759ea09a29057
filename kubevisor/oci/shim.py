"""The host shim: the process the pid-file names, standing in for one container process.

It lives exactly as long as the process in the guest: it attaches to the process's stdio through
the sandbox monitor, relays its own stdio (or a host pty when there is a terminal), forwards the
signals it receives, and exits with the process's exit status. conmon and containerd's shim are
subreapers and wait on it like on runc's container process.

Single-threaded (selectors + a signal wakeup fd): it is forked from the runtime, without exec.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import socket
import struct
import termios
import tty
from pathlib import Path

from kubevisor.agent import protocol as p

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGCONT,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGPWR,
    signal.SIGXCPU,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGURG,
)
LOST_AGENT_STATUS = 137  # the VM went away under the process: report it as killed


def _winsize(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


class Shim:
    def __init__(self, agent_socket: Path, container_id: str, exec_id: str, tty_fd: int | None) -> None:
        self.agent_socket = agent_socket
        self.container_id = container_id
        self.exec_id = exec_id
        self.tty_fd = tty_fd
        self.sock: socket.socket | None = None
        self.next_id = 3
        self.exit_status: int | None = None
        self.stdout_ok = True

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.agent_socket))
        self.sock = sock
        self.send(
            p.encode_json(
                1, p.REQUEST, {"op": "attach", "container_id": self.container_id, "exec_id": self.exec_id}
            )
        )

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def request(self, op: str, **args: object) -> None:
        """Fire-and-forget request (signals, resizes): answers are ignored."""
        sid = self.next_id
        self.next_id += 2
        self.send(
            p.encode_json(
                sid, p.REQUEST, {"op": op, "container_id": self.container_id, "exec_id": self.exec_id, **args}
            )
        )

    def forward_signal(self, sig: int) -> None:
        if sig == signal.SIGWINCH:
            if self.tty_fd is not None:
                with contextlib.suppress(OSError):
                    rows, cols = _winsize(self.tty_fd)
                    if rows and cols:
                        self.request("resize", rows=rows, cols=cols)
            return
        self.request("signal", signal=sig)

    def write_out(self, fd: int, data: bytes) -> None:
        if not self.stdout_ok:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except BlockingIOError:
            os.set_blocking(fd, True)
            self.write_out(fd, bytes(view))
        except OSError:
            self.stdout_ok = False  # the reader went away; keep running until the process exits

    def run(self) -> int:
        assert self.sock is not None
        sel = selectors.DefaultSelector()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        for sig in (*FORWARDED, signal.SIGWINCH):
            signal.signal(sig, lambda *_: None)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        sel.register(self.sock, selectors.EVENT_READ, "agent")
        in_fd = self.tty_fd if self.tty_fd is not None else 0
        out_fd = self.tty_fd if self.tty_fd is not None else 1
        err_fd = self.tty_fd if self.tty_fd is not None else 2
        try:
            sel.register(in_fd, selectors.EVENT_READ, "stdin")
        except (ValueError, OSError, PermissionError):
            # /dev/null or a regular file cannot be polled; a closed fd is end of input.
            self.pump_unpollable_stdin(in_fd)
        if self.tty_fd is not None:
            self.forward_signal(signal.SIGWINCH)
        decoder = p.FrameDecoder()
        while self.exit_status is None:
            for key, _ in sel.select():
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        for signum in os.read(wake_r, 64):
                            self.forward_signal(signum)
                elif key.data == "stdin":
                    try:
                        data = os.read(in_fd, 65536)
                    except OSError:
                        data = b""
                    if data:
                        self.send(p.encode(1, p.DATA, data))
                    elif self.tty_fd is None:
                        self.send(p.encode(1, p.DATA, b"", p.FLAG_EOF))
                        sel.unregister(in_fd)
                    else:
                        sel.unregister(in_fd)  # pty hung up: the console client left
                else:
                    try:
                        data = self.sock.recv(262144)
                    except OSError:
                        data = b""
                    if not data:
                        self.exit_status = LOST_AGENT_STATUS
                        break
                    for frame in decoder.feed(data):
                        self.on_frame(frame, out_fd, err_fd)
        signal.set_wakeup_fd(-1)
        return self.exit_status

    def pump_unpollable_stdin(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        while data:
            self.send(p.encode(1, p.DATA, data))
            data = os.read(fd, 65536)
        self.send(p.encode(1, p.DATA, b"", p.FLAG_EOF))

    def on_frame(self, frame: p.Frame, out_fd: int, err_fd: int) -> None:
        if frame.stream != 1:
            return  # answers to signal/resize requests
        if frame.type == p.DATA:
            self.write_out(err_fd if frame.flags & p.FLAG_STDERR else out_fd, frame.payload)
        elif frame.type == p.RESPONSE:
            body = frame.json()
            if body.get("ok"):
                self.exit_status = int(body.get("exit_status") or 0)
            else:
                os.write(2, f"kubevisor-runtime shim: {body.get('error')}\n".encode())
                self.exit_status = 255


def prepare_tty(fd: int, controlling: bool) -> None:
    """Raw mode on our side of the host pty (the guest's pty does the line discipline); as a
    session leader, make it our controlling terminal so that resizes arrive as SIGWINCH."""
    with contextlib.suppress(termios.error):
        tty.setraw(fd)
    if controlling:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCSCTTY, 0)


def run_shim(
    agent_socket: Path,
    container_id: str,
    exec_id: str,
    tty_fd: int | None,
    exit_file: Path | None,
    session: bool,
) -> int:
    if session:
        with contextlib.suppress(OSError):
            os.setsid()
    if tty_fd is not None:
        prepare_tty(tty_fd, controlling=session)
    shim = Shim(agent_socket, container_id, exec_id, tty_fd)
    try:
        shim.connect()
        status = shim.run()
    except OSError:
        status = LOST_AGENT_STATUS
    if exit_file is not None:
        with contextlib.suppress(OSError):
            tmp = exit_file.with_suffix(".tmp")
            tmp.write_text(str(status))
            os.replace(tmp, exit_file)
    return status
