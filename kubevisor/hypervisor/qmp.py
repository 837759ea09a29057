"""QMP over a unix socket, on `qemu.qmp` (the QEMU project's own client).

A thin layer: connect with retries while QEMU comes up (failing fast if it exits), run
commands, and hand QMP events to one callback. Everything else is `qemu.qmp`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, EventListener, QMPClient, QMPError, Runstate

EventHandler = Callable[[str, dict[str, Any]], None]

# qemu.qmp logs a full traceback at ERROR for every refused connect attempt; we retry on purpose.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QMPUnavailable(RuntimeError):
    """QMP could not be reached (QEMU exited or never listened)."""


class QMP:
    def __init__(self, name: str) -> None:
        self._client = QMPClient(name)
        self._listener = EventListener()
        self._client.register_listener(self._listener)
        self._pump: asyncio.Task[None] | None = None
        # A close (QEMU exited) may come while connect() retries: it waits for the attempt in
        # flight (qemu.qmp cannot disconnect under a pending connect) and stops further ones.
        self._attempt = asyncio.Lock()
        self._closed = False

    async def connect(self, socket: Path, timeout: float, alive: Callable[[], bool] | None = None) -> None:
        """Connect, retrying until timeout; give up early once `alive()` says QEMU is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            async with self._attempt:
                if self._closed:
                    raise QMPUnavailable(f"QMP at {socket}: closed while connecting")
                try:
                    await self._client.connect(str(socket))
                    return
                except ConnectError as e:
                    if (alive is not None and not alive()) or loop.time() > deadline:
                        raise QMPUnavailable(f"QMP at {socket}: {e.exc if e.exc else e}") from None
            await asyncio.sleep(0.02)

    def on_event(self, handler: EventHandler) -> None:
        """Deliver every event (name, data) to handler, in order, until disconnect."""

        async def pump() -> None:
            async for event in self._listener:
                data = event.get("data")
                handler(str(event["event"]), dict(data) if isinstance(data, dict) else {})

        self._pump = asyncio.create_task(pump())

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        return await self._client.execute(command, arguments)

    async def close(self) -> None:
        # QEMU closes the socket when it exits; a disconnect then reports that EOF: expected.
        self._closed = True
        async with self._attempt:
            if self._client.runstate != Runstate.IDLE:  # IDLE: never connected, nothing to undo
                with contextlib.suppress(QMPError, OSError, EOFError):
                    await self._client.disconnect()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


async def first_of(*aws: Awaitable[Any]) -> None:
    """Wait until the first of several awaitables is done; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
