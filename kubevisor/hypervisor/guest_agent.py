"""A client of the QEMU guest agent protocol over QEMU's `org.qemu.guest_agent.0` socket.

Works with qemu-guest-agent in real guests and with the legacy image's own agent. The channel
has no framing and may hold a stale reply from an earlier client, so every session starts with
`guest-sync-delimited`: the agent answers with 0xFF followed by the id we sent, and everything
before that is dropped. Replies are one JSON object per line. QEMU's socket serves one client
at a time: callers hold one GuestAgent per guest and serialize on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path
from typing import Any

SYNC_TIMEOUT = 3.0


class GuestAgentError(RuntimeError):
    """The agent is not connected, did not answer in time, or answered with an error."""


class GuestAgent:
    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 5.0,
        no_reply: bool = False,
    ) -> Any:
        """Run one command; its `return` value. `no_reply` for guest-shutdown, which answers nothing."""
        async with self._lock:
            try:
                await self._ensure_synced()
                request: dict[str, Any] = {"execute": command}
                if arguments:
                    request["arguments"] = arguments
                assert self._writer is not None
                self._writer.write(json.dumps(request).encode() + b"\n")
                await self._writer.drain()
                if no_reply:
                    return None
                reply = await asyncio.wait_for(self._read_reply(), timeout)
            except (TimeoutError, OSError, EOFError, ValueError) as exc:
                await self._drop()
                raise GuestAgentError(f"guest agent: {command}: {exc or type(exc).__name__}") from None
        if "error" in reply:
            err = reply["error"] or {}
            raise GuestAgentError(f"guest agent: {command}: {err.get('desc') or err}")
        return reply.get("return")

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _ensure_synced(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            return
        self._reader, self._writer = await asyncio.open_unix_connection(str(self.socket))
        token = random.randrange(1, 2**31)
        self._writer.write(b"\xff" + json.dumps(
            {"execute": "guest-sync-delimited", "arguments": {"id": token}}).encode() + b"\n")
        await self._writer.drain()
        await asyncio.wait_for(self._await_sync(token), SYNC_TIMEOUT)

    async def _await_sync(self, token: int) -> None:
        assert self._reader is not None
        while True:
            await self._reader.readuntil(b"\xff")
            line = await self._reader.readline()
            with contextlib.suppress(ValueError):
                if json.loads(line).get("return") == token:
                    return

    async def _read_reply(self) -> dict[str, Any]:
        assert self._reader is not None
        while True:
            line = await self._reader.readline()
            if not line:
                raise EOFError("the agent closed the channel")
            line = line.strip().lstrip(b"\xff")
            if not line:
                continue
            reply = json.loads(line)
            if isinstance(reply, dict) and ("return" in reply or "error" in reply):
                return reply

    async def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
