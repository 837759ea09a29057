"""SQLite storage in the kine design, with a writer thread doing group commit.

One append-only table: each write inserts a row whose id is the new global revision
(= resourceVersion). Deletes insert a tombstone carrying the last state. A unique index on
(name, prev_revision) is the compare-and-swap guard. WAL + synchronous=FULL: a write is
acknowledged only after its transaction is on disk. Writes are batched: while one
transaction commits, the next requests queue up and share the following fsync.

The asyncio side keeps the authoritative in-memory view (current objects, a ring buffer of
recent events) so reads and watches never touch SQLite.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubevisor.apiserver.storage.base import (
    AlreadyExistsError,
    CompactedError,
    ConflictError,
    NotFoundError,
    Obj,
    Predicate,
    StorageUnavailableError,
    Watcher,
    WatchEvent,
)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine (name, prev_revision);
CREATE INDEX IF NOT EXISTS kine_name_index ON kine (name);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the durability settings every write relies on."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@dataclass
class _Row:
    rev: int
    key: str
    created: bool
    deleted: bool
    create_rev: int
    prev_rev: int
    value: bytes
    obj: Obj
    future: asyncio.Future[Obj] | None = None


@dataclass
class _Compact:
    target: int
    future: asyncio.Future[Obj]


@dataclass
class _Batch:
    items: list[_Row | _Compact] = field(default_factory=list)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _with_rv(obj: Obj, rev: int) -> Obj:
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta["resourceVersion"] = str(rev)
    out["metadata"] = meta
    return out


class _WriterThread(threading.Thread):
    """Owns the write connection. Runs batches; reports each batch's outcome to the loop."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop, done: Any) -> None:
        super().__init__(name="kubevisor-sqlite-writer", daemon=True)
        self.path = path
        self.loop = loop
        self.done = done
        self.requests: queue.Queue[_Row | _Compact | None] = queue.Queue()

    def run(self) -> None:
        conn = connect(self.path)
        try:
            while True:
                first = self.requests.get()
                if first is None:
                    return
                items: list[_Row | _Compact] = [first]
                stop = False
                while len(items) < 1000:
                    try:
                        nxt = self.requests.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    items.append(nxt)
                error: BaseException | None = None
                try:
                    self._apply(conn, items)
                except BaseException as exc:  # reported to every waiter of the batch
                    error = exc
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                self.loop.call_soon_threadsafe(self.done, items, error)
                if stop:
                    return
        finally:
            conn.close()

    @staticmethod
    def _apply(conn: sqlite3.Connection, items: list[_Row | _Compact]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for item in items:
            if isinstance(item, _Row):
                conn.execute(
                    "INSERT INTO kine(id, name, created, deleted, create_revision, prev_revision, value)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.rev,
                        item.key,
                        int(item.created),
                        int(item.deleted),
                        item.create_rev,
                        item.prev_rev,
                        item.value,
                    ),
                )
            else:
                # Drop every row at or below the target that is superseded or a tombstone.
                conn.execute(
                    "DELETE FROM kine WHERE id <= ? AND (deleted = 1 OR id NOT IN "
                    "(SELECT MAX(id) FROM kine GROUP BY name))",
                    (item.target,),
                )
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('compact_revision', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (item.target,),
                )
        conn.execute("COMMIT")


class SQLiteStorage:
    """The default backend. All public methods must be called on the event loop thread."""

    def __init__(self, path: Path, ring_size: int = 20000, watch_queue: int = 10000) -> None:
        self.path = path
        self.ring_size = ring_size
        self.watch_queue = watch_queue
        # committed state: key -> (object with RV, create_revision)
        self._objects: dict[str, Obj] = {}
        self._create_rev: dict[str, int] = {}
        # latest known including writes in flight: key -> (rev, exists)
        self._latest: dict[str, tuple[int, bool]] = {}
        self._ring: collections.deque[WatchEvent] = collections.deque()
        self._ring_start = 0  # events with rev > _ring_start are in the ring
        self._rev = 0  # committed revision
        self._next_rev = 1
        self._watchers: set[Watcher] = set()
        self._writer: _WriterThread | None = None
        self._broken: BaseException | None = None
        self._compact_rev = 0

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._load)
        self._writer = _WriterThread(self.path, asyncio.get_running_loop(), self._batch_done)
        self._writer.start()

    def _load(self) -> None:
        conn = connect(self.path)
        try:
            conn.executescript(SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'compact_revision'").fetchone()
            self._compact_rev = int(row[0]) if row else 0
            ring_from: int | None = None
            count = conn.execute("SELECT COUNT(*), MAX(id) FROM kine").fetchone()
            total, max_id = int(count[0]), int(count[1] or 0)
            skip = max(0, total - self.ring_size)
            cur = conn.execute(
                "SELECT id, name, created, deleted, create_revision, value FROM kine ORDER BY id"
            )
            for index, (rev, key, created, deleted, create_rev, value) in enumerate(cur):
                obj = _with_rv(json.loads(value), rev)
                prev = self._objects.get(key)
                if deleted:
                    self._objects.pop(key, None)
                    self._create_rev.pop(key, None)
                else:
                    self._objects[key] = obj
                    self._create_rev[key] = create_rev
                if index >= skip:
                    if ring_from is None:
                        ring_from = rev - 1
                    kind = "DELETED" if deleted else ("ADDED" if created else "MODIFIED")
                    self._ring.append(WatchEvent(rev, kind, key, obj, None if created else prev))
            self._rev = max(max_id, self._compact_rev)
            self._ring_start = max(self._compact_rev, ring_from if ring_from is not None else self._rev)
            self._next_rev = self._rev + 1
            for key, obj in self._objects.items():
                self._latest[key] = (int(obj["metadata"]["resourceVersion"]), True)
        finally:
            conn.close()

    async def close(self) -> None:
        for watcher in list(self._watchers):
            watcher.close()
        if self._writer is not None:
            self._writer.requests.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None

    # -- reads ---------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        return self._rev

    @property
    def healthy(self) -> bool:
        return self._broken is None and self._writer is not None

    @property
    def oldest_revision(self) -> int:
        return self._ring_start

    def get(self, key: str) -> Obj | None:
        return self._objects.get(key)

    def scan(self, prefix: str, revision: int | None = None) -> tuple[list[tuple[str, Obj]], int]:
        current = {k: v for k, v in self._objects.items() if k.startswith(prefix)}
        if revision is not None and revision < self._rev:
            if revision < self._ring_start:
                raise CompactedError(revision, self._ring_start)
            # Undo the events after `revision`, newest first.
            for event in reversed(self._ring):
                if event.rev <= revision:
                    break
                if not event.key.startswith(prefix):
                    continue
                if event.type == "ADDED" or event.prev is None:
                    current.pop(event.key, None)
                else:
                    current[event.key] = event.prev
            rev = revision
        else:
            rev = self._rev
        return sorted(current.items()), rev

    # -- writes --------------------------------------------------------------------------
    def _submit(self, key: str, obj: Obj, created: bool, deleted: bool, prev_rev: int) -> asyncio.Future[Obj]:
        if self._broken is not None or self._writer is None:
            raise StorageUnavailableError(f"storage is unavailable: {self._broken}")
        rev = self._next_rev
        self._next_rev += 1
        create_rev = rev if created else self._create_rev.get(key, rev)
        stored = _with_rv(obj, rev)
        value = dict(stored)
        value["metadata"] = {k: v for k, v in stored["metadata"].items() if k != "resourceVersion"}
        future: asyncio.Future[Obj] = asyncio.get_running_loop().create_future()
        row = _Row(rev, key, created, deleted, create_rev, prev_rev, _dumps(value), stored, future)
        self._latest[key] = (rev, not deleted)
        self._writer.requests.put(row)
        return future

    def _expect(self, key: str, expected_rev: int) -> None:
        latest = self._latest.get(key)
        if latest is None or not latest[1]:
            raise NotFoundError(key)
        if expected_rev and latest[0] != expected_rev:
            raise ConflictError(key)

    async def create(self, key: str, obj: Obj) -> Obj:
        latest = self._latest.get(key)
        if latest is not None and latest[1]:
            raise AlreadyExistsError(key)
        return await self._submit(key, obj, True, False, latest[0] if latest else 0)

    async def update(self, key: str, obj: Obj, expected_rev: int) -> Obj:
        """expected_rev 0 means unconditional."""
        self._expect(key, expected_rev)
        return await self._submit(key, obj, False, False, self._latest[key][0])

    async def delete(self, key: str, expected_rev: int) -> Obj:
        self._expect(key, expected_rev)
        current = self._objects.get(key)
        if current is None:  # created but not yet committed: wait for it, then retry
            raise ConflictError(key)
        return await self._submit(key, current, False, True, self._latest[key][0])

    def _batch_done(self, items: list[_Row | _Compact], error: BaseException | None) -> None:
        if error is not None:
            log.error("storage write failed; refusing further writes: %s", error)
            self._broken = error
            for item in items:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(StorageUnavailableError(str(error)))
            return
        for item in items:
            if isinstance(item, _Compact):
                self._compact_rev = max(self._compact_rev, item.target)
                while self._ring and self._ring[0].rev <= item.target:
                    self._ring.popleft()
                self._ring_start = max(self._ring_start, item.target)
                item.future.set_result({})
                continue
            prev = self._objects.get(item.key)
            if item.deleted:
                self._objects.pop(item.key, None)
                self._create_rev.pop(item.key, None)
                kind = "DELETED"
            else:
                self._objects[item.key] = item.obj
                self._create_rev[item.key] = item.create_rev
                kind = "ADDED" if item.created else "MODIFIED"
            self._rev = item.rev
            event = WatchEvent(item.rev, kind, item.key, item.obj, prev)
            self._ring.append(event)
            if len(self._ring) > self.ring_size:
                dropped = self._ring.popleft()
                self._ring_start = dropped.rev
            for watcher in list(self._watchers):
                watcher.offer(event)
            if item.future is not None and not item.future.done():
                item.future.set_result(item.obj)

    async def compact(self, keep: int) -> int:
        """Forget history older than the last `keep` revisions. Returns the compact revision."""
        target = self._rev - keep
        if target <= self._compact_rev or self._writer is None:
            return self._compact_rev
        future: asyncio.Future[Obj] = asyncio.get_running_loop().create_future()
        self._writer.requests.put(_Compact(target, future))
        await future
        return self._compact_rev

    # -- watch ---------------------------------------------------------------------------
    def watch(
        self, prefix: str, from_rev: int | None, predicate: Predicate | None = None
    ) -> tuple[Watcher, list[Obj] | None]:
        watcher = Watcher(prefix, predicate, self.watch_queue)
        initial: list[Obj] | None = None
        if from_rev is None:
            initial = [
                obj
                for key, obj in sorted(self._objects.items())
                if key.startswith(prefix) and (predicate is None or predicate(obj))
            ]
        else:
            if from_rev < self._ring_start:
                raise CompactedError(from_rev, self._ring_start)
            for event in self._ring:
                if event.rev > from_rev:
                    watcher.offer(event, backlog=True)
        watcher.on_close = self._watchers.discard
        self._watchers.add(watcher)
        return watcher, initial

    def watcher_count(self) -> int:
        return len(self._watchers)
