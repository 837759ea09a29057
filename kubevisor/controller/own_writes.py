"""Own writes: do not act on a cached object older than the controller's last write of it.

After a controller writes an object (status update, patch), its informer cache still holds the
previous version until the watch event arrives. A reconcile in that window (another event for
the same key: a pod changed) computes from stale data and writes again: an update fails with
409 Conflict and is retried, a patch is sent twice. Both cost API writes (KubeVirt's density
budget counts them). So the controller records the resourceVersion each write returned; the
informer handler clears it once an event carries it (or the object is deleted); and a reconcile
that finds the cache at another version waits for that event (it enqueues the key) instead of
writing. Watch events arrive in order, so until our version shows up the cache is behind. A
relist may skip versions: after `timeout` the record is dropped and the cache trusted again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kubevisor.controller.kube import Obj

OWN_WRITE_TIMEOUT = 5.0


def _rv(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


class OwnWrites:
    def __init__(
        self, timeout: float = OWN_WRITE_TIMEOUT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._written: dict[str, tuple[str, float]] = {}  # key -> (resourceVersion we wrote, when)
        self._seen: dict[str, str] = {}  # key -> resourceVersion last seen by the informer

    def wrote(self, key: str, obj: Obj) -> None:
        """Record a successful write of `key` that returned `obj`."""
        rv = _rv(obj)
        if not rv:
            return
        with self._lock:
            if self._seen.get(key) == rv:
                return  # the watch event beat the response
            self._written[key] = (rv, self._clock())

    def observed(self, key: str, obj: Obj | None) -> None:
        """Call from the informer handler with the new object (None when deleted)."""
        with self._lock:
            if obj is None:
                self._written.pop(key, None)
                self._seen.pop(key, None)
                return
            rv = _rv(obj)
            self._seen[key] = rv
            pending = self._written.get(key)
            if pending is not None and pending[0] == rv:
                del self._written[key]

    def behind(self, key: str, cached: Obj) -> float | None:
        """Seconds to wait if `cached` predates our last write of `key`; None if it is current."""
        with self._lock:
            pending = self._written.get(key)
            if pending is None or pending[0] == _rv(cached):
                return None
            left = pending[1] + self.timeout - self._clock()
            if left <= 0:
                del self._written[key]
                return None
            return left
