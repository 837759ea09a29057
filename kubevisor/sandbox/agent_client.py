"""Host side of the agent protocol: requests and stdio streams over one unix socket.

The socket is the sandbox monitor's (which multiplexes every client onto the VM's virtio-serial
port) or, in tests, an agent running on the host. A reader thread routes frames to streams.
"""

from __future__ import annotations

import itertools
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

from kubevisor.agent import protocol as p


class AgentError(Exception):
    """The agent refused or failed a request; str() is its message."""


class AgentGone(AgentError):
    """The connection to the agent (or its VM) is gone."""


class Stream:
    def __init__(self, client: AgentClient, sid: int) -> None:
        self.client = client
        self.id = sid
        self.frames: queue.Queue[p.Frame | None] = queue.Queue()

    def recv(self, timeout: float | None = None) -> p.Frame:
        """Next DATA or RESPONSE frame of this stream; AgentGone if the connection closed."""
        try:
            frame = self.frames.get(timeout=timeout)
        except queue.Empty as exc:
            raise TimeoutError("no answer from the agent") from exc
        if frame is None:
            raise AgentGone("connection to the sandbox agent closed")
        return frame

    def send_data(self, data: bytes, eof: bool = False) -> None:
        self.client.send(p.encode(self.id, p.DATA, data, p.FLAG_EOF if eof else 0))


def result_of(frame: p.Frame) -> dict[str, Any]:
    body = frame.json()
    if not body.get("ok"):
        raise AgentError(str(body.get("error", "unknown agent error")))
    return body


class AgentClient:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._ids = itertools.count(1, 2)
        self._streams: dict[int, Stream] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="agent-client", daemon=True)
        self._reader.start()

    @classmethod
    def connect(cls, path: Path, timeout: float = 5.0) -> AgentClient:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                return cls(sock)
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise AgentGone(f"cannot reach the sandbox agent at {path}: {exc}") from exc
                time.sleep(0.05)

    def _read(self) -> None:
        decoder = p.FrameDecoder()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for frame in decoder.feed(data):
                    with self._lock:
                        stream = self._streams.get(frame.stream)
                        if frame.type == p.RESPONSE:
                            self._streams.pop(frame.stream, None)
                    if stream is not None:
                        stream.frames.put(frame)
        except (OSError, p.ProtocolError):
            pass
        with self._lock:
            self._closed = True
            streams = list(self._streams.values())
            self._streams.clear()
        for s in streams:
            s.frames.put(None)

    def send(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self.sock.sendall(data)
        except OSError as exc:
            raise AgentGone(f"connection to the sandbox agent lost: {exc}") from exc

    def open(self, op: str, **args: Any) -> Stream:
        with self._lock:
            if self._closed:
                raise AgentGone("connection to the sandbox agent closed")
            stream = Stream(self, next(self._ids))
            self._streams[stream.id] = stream
        self.send(p.encode_json(stream.id, p.REQUEST, {"op": op, **args}))
        return stream

    def call(self, op: str, timeout: float | None = 300.0, **args: Any) -> dict[str, Any]:
        stream = self.open(op, **args)
        while True:
            frame = stream.recv(timeout)
            if frame.type == p.RESPONSE:
                return result_of(frame)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(5)

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
