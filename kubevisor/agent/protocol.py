"""Wire format between the host and the in-guest agent (standard library only: it runs in the guest).

One byte stream (the virtio-serial port) carries many logical streams, ttRPC-style. Every frame
has a 10-byte header: payload length (u32 BE), stream id (u32 BE), frame type (u8), flags (u8).

- REQUEST opens a stream; payload is JSON ``{"op": str, ...args}``.
- RESPONSE closes a stream; payload is JSON ``{"ok": true, ...result}`` or ``{"ok": false, "error": str}``.
- DATA carries raw bytes on an open stream: host→guest is the process's stdin (flag EOF closes it),
  guest→host is stdout, or stderr with flag STDERR (flag EOF marks the end of that output).
- CANCEL (host→guest) abandons a stream whose client went away; the process keeps running.
- HELLO (guest→host, stream 0) says the agent is up; payload is JSON ``{"version": str}``.

Clients use odd stream ids; 0 is reserved for HELLO.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct(">IIBB")
MAX_PAYLOAD = 4 * 1024 * 1024

REQUEST = 1
RESPONSE = 2
DATA = 3
CANCEL = 4
HELLO = 5
FRAME_TYPES = frozenset({REQUEST, RESPONSE, DATA, CANCEL, HELLO})

FLAG_EOF = 1
FLAG_STDERR = 2

AGENT_PORT_NAME = "kubevisor.agent.0"
SHARED_TAG = "kvshared"
GUEST_SHARED_DIR = "/run/kv/shared"
PROTOCOL_VERSION = "1"


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


@dataclass(frozen=True)
class Frame:
    stream: int
    type: int
    flags: int
    payload: bytes

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.payload)
        except ValueError as exc:
            raise ProtocolError(f"frame payload is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ProtocolError("frame payload is not a JSON object")
        return value


def encode(stream: int, type_: int, payload: bytes = b"", flags: int = 0) -> bytes:
    if type_ not in FRAME_TYPES:
        raise ProtocolError(f"unknown frame type {type_}")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(payload), stream, type_, flags) + payload


def encode_json(stream: int, type_: int, obj: dict[str, Any]) -> bytes:
    return encode(stream, type_, json.dumps(obj, separators=(",", ":")).encode())


class FrameDecoder:
    """Incremental decoder: feed bytes, get complete frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= HEADER.size:
            length, stream, type_, flags = HEADER.unpack_from(self._buf)
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"frame length {length} exceeds {MAX_PAYLOAD}")
            if type_ not in FRAME_TYPES:
                raise ProtocolError(f"unknown frame type {type_}")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append(Frame(stream, type_, flags, bytes(self._buf[HEADER.size : end])))
            del self._buf[:end]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)
