"""A rate-limited work queue with client-go's semantics.

- A key is queued at most once (dedup), and never handed to two workers at once: a key
  added while it is being processed is re-queued when `done()` is called.
- `add_rate_limited(key)` re-adds after a per-key exponential back-off
  (base * 2**failures, capped); `forget(key)` resets it after a success.
- `add_after(key, delay)` re-adds later (used for expectations timeouts and back-offs
  the reconcile logic computes itself).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable


class ExponentialBackoff:
    """Per-key failure counter → delay, like client-go's ItemExponentialFailureRateLimiter."""

    def __init__(self, base: float = 0.005, cap: float = 300.0) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def when(self, key: str) -> float:
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        return min(self.base * (2**n), self.cap)

    def failures(self, key: str) -> int:
        with self._lock:
            return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class WorkQueue:
    def __init__(
        self,
        name: str,
        backoff: ExponentialBackoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.backoff = backoff or ExponentialBackoff()
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._shutdown = False
        self.adds_total = 0
        self.retries_total = 0

    # -- producers --------------------------------------------------------------------
    def add(self, key: str) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self.adds_total += 1
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            heapq.heappush(self._delayed, (self._clock() + delay, next(self._seq), key))
            self._cond.notify()

    def add_rate_limited(self, key: str) -> None:
        self.retries_total += 1
        self.add_after(key, self.backoff.when(key))

    def forget(self, key: str) -> None:
        self.backoff.forget(key)

    def num_requeues(self, key: str) -> int:
        return self.backoff.failures(key)

    # -- consumers --------------------------------------------------------------------
    def _promote_due_locked(self) -> float | None:
        """Move due delayed keys into the queue; return seconds until the next one."""
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self._add_locked(key)
        return self._delayed[0][0] - now if self._delayed else None

    def get(self, timeout: float | None = None) -> str | None:
        """Block until a key is ready (or shutdown / timeout: None)."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                wait_next = self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                if self._shutdown:
                    return None
                waits = [
                    w
                    for w in (wait_next, None if deadline is None else deadline - self._clock())
                    if w is not None
                ]
                wait = min(waits) if waits else None
                if wait is not None and wait <= 0:
                    if deadline is not None and self._clock() >= deadline:
                        return None
                    continue
                self._cond.wait(wait)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def pending_delayed(self) -> list[str]:
        with self._cond:
            return [key for _, _, key in sorted(self._delayed)]
