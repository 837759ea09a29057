"""Byte plumbing between a `plain.kubevirt.io` websocket and local ends (TCP, UDP, stdio).

Every websocket message is binary; one message is one chunk of the stream (one datagram for UDP).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable

import aiohttp

CHUNK = 64 * 1024
GOING_AWAY = 1001  # the server closed this session because another one took over
ABNORMAL = 1006


class Closed(Exception):
    """The websocket ended; `code` is its close code (None when we closed it)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"websocket closed ({code}) {reason}".strip())
        self.code = code
        self.reason = reason


async def ws_to(ws: aiohttp.ClientWebSocketResponse, sink: Callable[[bytes], Awaitable[None]]) -> Closed:
    """Copy messages to `sink` until the websocket ends; returns how it ended."""
    while True:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            await sink(msg.data)
        elif msg.type == aiohttp.WSMsgType.TEXT:
            await sink(msg.data.encode())
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            code = ws.close_code
            if msg.type == aiohttp.WSMsgType.CLOSE and isinstance(msg.data, int):
                code = msg.data
            return Closed(code, str(msg.extra or ""))
        elif msg.type == aiohttp.WSMsgType.ERROR:
            return Closed(ABNORMAL, str(ws.exception() or "connection lost"))


async def bridge_tcp(
    ws: aiohttp.ClientWebSocketResponse, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Closed | None:
    """Copy both ways until either side ends; closes both. Returns how the websocket ended, if it did."""

    async def to_local(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    async def to_remote() -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                return
            await ws.send_bytes(data)

    down = asyncio.ensure_future(ws_to(ws, to_local))
    up = asyncio.ensure_future(to_remote())
    try:
        done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (down, up):
            task.cancel()
        await ws.close()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if down in done and not down.cancelled() and down.exception() is None:
        return down.result()
    return None


class StdinReader:
    """Reads a file descriptor in a thread (works for ttys, pipes, files and /dev/null alike)."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._fd = fd
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="virtctl-stdin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self._fd, CHUNK)
            except OSError:
                data = b""
            try:
                self._loop.call_soon_threadsafe(self.queue.put_nowait, data)
            except RuntimeError:  # the loop is gone
                return
            if not data:
                return

    async def read(self) -> bytes:
        """The next chunk; b'' at end of input."""
        return await self.queue.get()


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        view = view[written:]
