"""Expectations: what a controller has asked the API for and not yet seen in its cache.

After a create or delete the cache lags behind the API for a moment; a reconcile that ran
in that window would see "no pod yet" and create a second one. So a controller records
what it expects (`expect_creations`, `expect_deletions`) and skips acting on a key until
the informer has observed those changes or the expectation has expired (the object may
never show up, e.g. a create that timed out on the client but failed on the server).

Expectations live in memory only. After a restart they are empty, but a controller only
works after its caches are synced, so whatever the previous instance created is in the
cache by then; deterministic names (VM → VMI) and ownerReference lookups (VMI → pod)
cover the rest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

EXPECTATIONS_TIMEOUT = 300.0  # as KubeVirt (pkg/controller/expectations.go)


@dataclass
class _Expectation:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)
    stamp: float = 0.0


class Expectations:
    def __init__(
        self, timeout: float = EXPECTATIONS_TIMEOUT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._by_key: dict[str, _Expectation] = {}

    def expect_creations(self, key: str, count: int) -> None:
        with self._lock:
            exp = self._by_key.setdefault(key, _Expectation())
            exp.adds += count
            exp.stamp = self._clock()

    def creation_observed(self, key: str) -> None:
        with self._lock:
            exp = self._by_key.get(key)
            if exp is not None and exp.adds > 0:
                exp.adds -= 1

    def expect_deletions(self, key: str, obj_keys: list[str]) -> None:
        with self._lock:
            exp = self._by_key.setdefault(key, _Expectation())
            exp.deletes.update(obj_keys)
            exp.stamp = self._clock()

    def deletion_observed(self, key: str, obj_key: str) -> None:
        with self._lock:
            exp = self._by_key.get(key)
            if exp is not None:
                exp.deletes.discard(obj_key)

    def pending(self, key: str) -> tuple[int, int]:
        with self._lock:
            exp = self._by_key.get(key)
            return (exp.adds, len(exp.deletes)) if exp else (0, 0)

    def satisfied(self, key: str) -> bool:
        with self._lock:
            exp = self._by_key.get(key)
            if exp is None:
                return True
            if exp.adds <= 0 and not exp.deletes:
                return True
            return self._clock() - exp.stamp > self.timeout

    def time_left(self, key: str) -> float:
        with self._lock:
            exp = self._by_key.get(key)
            if exp is None:
                return 0.0
            return max(0.0, self.timeout - (self._clock() - exp.stamp))

    def delete(self, key: str) -> None:
        with self._lock:
            self._by_key.pop(key, None)
