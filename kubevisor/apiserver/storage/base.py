"""The storage protocol, its errors, watch events and the bounded per-watch queue."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]


class StorageError(Exception):
    """Base class of storage errors."""


class NotFoundError(StorageError):
    pass


class AlreadyExistsError(StorageError):
    pass


class ConflictError(StorageError):
    """The key's current revision is not the one the write expected."""


class CompactedError(StorageError):
    """The requested revision is older than the retained history."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class StorageUnavailableError(StorageError):
    """The backend failed to persist a write; no further writes are accepted."""


@dataclass(frozen=True)
class WatchEvent:
    rev: int
    type: str  # ADDED | MODIFIED | DELETED
    key: str
    obj: Obj  # state after the event (the last state for DELETED)
    prev: Obj | None  # state before the event, None when unknown or created


Predicate = Callable[[Obj], bool]


def transition(event: WatchEvent, predicate: Predicate | None) -> str | None:
    """The event type a watcher with this filter sees, or None if it sees nothing.

    An update that moves an object into the filter is ADDED for that watcher, one that
    moves it out is DELETED (with the new state), as the real apiserver does.
    """
    if predicate is None:
        return event.type
    now = predicate(event.obj)
    if event.type == "ADDED":
        return "ADDED" if now else None
    if event.type == "DELETED":
        return "DELETED" if now else None
    before = event.prev is not None and predicate(event.prev)
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    if before:
        return "DELETED"
    return None


class Watcher:
    """A bounded queue of events for one watch. Overflow closes it: never blocks writers."""

    def __init__(self, prefix: str, predicate: Predicate | None, max_pending: int) -> None:
        self.prefix = prefix
        self.predicate = predicate
        self.max_pending = max_pending
        self._items: collections.deque[tuple[str, WatchEvent]] = collections.deque()
        self._wake = asyncio.Event()
        self.closed = False
        self.overflowed = False
        self.on_close: Callable[[Watcher], None] | None = None

    def offer(self, event: WatchEvent, backlog: bool = False) -> None:
        if self.closed or not event.key.startswith(self.prefix):
            return
        kind = transition(event, self.predicate)
        if kind is None:
            return
        if not backlog and len(self._items) >= self.max_pending:
            self.overflowed = True
            self.close()
            return
        self._items.append((kind, event))
        self._wake.set()

    def pending(self) -> int:
        return len(self._items)

    async def next(self, timeout: float | None) -> tuple[str, WatchEvent] | None:
        """The next (type, event); None on timeout or when closed and drained."""
        while not self._items:
            if self.closed:
                return None
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return None
        return self._items.popleft()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        if self.on_close is not None:
            self.on_close(self)


class Storage(Protocol):
    """What the registry needs from a backend. Reads are served from the watch cache."""

    @property
    def revision(self) -> int: ...

    @property
    def healthy(self) -> bool:
        """False once a write failed to persist (the server then refuses writes)."""
        ...

    @property
    def oldest_revision(self) -> int:
        """Events after this revision are retained; watching from older ones is 410."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def get(self, key: str) -> Obj | None: ...

    def scan(self, prefix: str, revision: int | None = None) -> tuple[list[tuple[str, Obj]], int]:
        """Sorted (key, object) pairs under prefix, as of revision (default: now)."""
        ...

    async def create(self, key: str, obj: Obj) -> Obj: ...

    async def update(self, key: str, obj: Obj, expected_rev: int) -> Obj: ...

    async def delete(self, key: str, expected_rev: int) -> Obj: ...

    def watch(
        self, prefix: str, from_rev: int | None, predicate: Predicate | None = None
    ) -> tuple[Watcher, list[Obj] | None]:
        """A watcher for events after from_rev. With from_rev None, also the current objects."""
        ...

    async def compact(self, keep: int) -> int: ...
