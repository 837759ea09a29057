"""The guest's serial console on QEMU's unix socket: scan it for markers, or attach a terminal.

QEMU's socket chardev takes one client at a time; while nobody is connected, output still
goes to the chardev's log file (serial0.log in the run dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import termios
import tty
from collections.abc import Callable
from pathlib import Path

DETACH = b"\x1d"  # Ctrl-]


class Console:
    """A connection to the serial socket that keeps everything the guest printed since connect.

    One reader task owns the socket; any number of `expect()` calls wait on what it collects.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        self.closed = False
        self.on_output: Callable[[bytes], None] | None = None
        self._more = asyncio.Event()
        self._task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, socket: Path, timeout: float = 30.0) -> Console:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(socket))
                return cls(reader, writer)
            except (FileNotFoundError, ConnectionRefusedError):
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def _read_loop(self) -> None:
        try:
            while chunk := await self.reader.read(4096):
                self.buffer += chunk
                if self.on_output is not None:
                    self.on_output(chunk)
                self._more.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self._more.set()

    async def expect(
        self, pattern: bytes | re.Pattern[bytes], timeout: float, start: int = 0
    ) -> re.Match[bytes]:
        """Wait until pattern appears in the output after offset start; returns the match.

        Raises TimeoutError, or EOFError if the console closes (QEMU exited) first.
        """
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))

        async def scan() -> re.Match[bytes]:
            while True:
                self._more.clear()
                m = regex.search(self.buffer, start)
                if m:
                    return m
                if self.closed:
                    raise EOFError("console closed")
                await self._more.wait()

        return await asyncio.wait_for(scan(), timeout)

    def mark(self) -> int:
        """An offset to pass as start= to expect(): only output after this point counts."""
        return len(self.buffer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_closed(self) -> None:
        """Until the guest side closes (QEMU exits)."""
        await asyncio.shield(self._task)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def attach_terminal(console: Console, detach: bytes = DETACH) -> None:
    """Relay the terminal (stdin/stdout, raw mode if a tty) and the console until detach or EOF.

    Returns when the user presses Ctrl-] or the console closes; the terminal mode is restored.
    """
    loop = asyncio.get_running_loop()
    stdin_fd = sys.stdin.fileno()
    stdout_fd = sys.stdout.fileno()
    is_tty = os.isatty(stdin_fd)
    saved = termios.tcgetattr(stdin_fd) if is_tty else None
    done = loop.create_future()

    def on_stdin() -> None:
        try:
            data = os.read(stdin_fd, 1024)
        except OSError:
            data = b""
        if not data:  # stdin closed: stop forwarding input, keep showing output
            loop.remove_reader(stdin_fd)
            return
        if detach in data:
            data = data[: data.index(detach)]
            if data:
                console.writer.write(data)
            if not done.done():
                done.set_result(None)
            return
        console.writer.write(data)

    def on_output(chunk: bytes) -> None:
        os.write(stdout_fd, chunk)

    console.on_output = on_output
    try:
        if saved is not None:
            tty.setraw(stdin_fd)
        loop.add_reader(stdin_fd, on_stdin)
        closed = asyncio.ensure_future(console.wait_closed())
        await asyncio.wait([closed, done], return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
    finally:
        loop.remove_reader(stdin_fd)
        console.on_output = None
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
