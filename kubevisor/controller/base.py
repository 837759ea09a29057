"""The worker loop shared by every controller: queue → reconcile(key) → forget or retry.

Reconcile is level-triggered: it is given only a key and reads the current state from the
informer caches, so it does the same right thing whether it runs once or ten times, after
one event or after a restart. A reconcile may return a delay to be called again later
(timers: back-offs, heartbeat timeouts); an exception re-queues the key with per-key
exponential back-off.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from abc import ABC, abstractmethod

from kubevisor.controller.kube import ApiError, Obj
from kubevisor.controller.workqueue import WorkQueue

log = logging.getLogger(__name__)


class Controller(ABC):
    name = "controller"
    workers = 1

    def __init__(self) -> None:
        self.queue = WorkQueue(self.name)
        self._threads: list[threading.Thread] = []

    @abstractmethod
    def reconcile(self, key: str) -> float | None:
        """Bring the object named by `key` to its desired state; return a re-check delay or None."""

    def enqueue(self, key: str) -> None:
        self.queue.add(key)

    def process_one(self, timeout: float | None = None) -> bool:
        key = self.queue.get(timeout)
        if key is None:
            return False
        try:
            again = self.reconcile(key)
        except Exception as exc:
            # A conflict only means our cache was behind: retry quietly with the fresh object.
            level = logging.DEBUG if isinstance(exc, ApiError) and exc.conflict else logging.WARNING
            log.log(
                level,
                "%s: reconcile %s failed (retry %d): %s",
                self.name,
                key,
                self.queue.num_requeues(key),
                exc,
            )
            self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)
            if again is not None:
                self.queue.add_after(key, again)
        finally:
            self.queue.done(key)
        return True

    def _worker(self) -> None:
        while self.process_one():
            pass

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self.queue.shutdown()
        for t in self._threads:
            t.join(timeout=10)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp(t: dt.datetime | None = None) -> str:
    """RFC 3339 seconds, the format of metav1.Time."""
    return (t or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ")


def controller_ref(obj: Obj) -> Obj | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None
