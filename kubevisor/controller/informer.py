"""Informers: a local cache per resource kept current by list + watch.

One thread per informer: list (remember the list's resourceVersion), then watch from
it, resuming from the last seen resourceVersion (bookmarks included) when the server
ends the stream, and re-listing when the server answers 410 Gone. After a re-list the
cache is replaced wholesale and handlers see the differences (adds, updates, deletes),
so nothing that changed while we were not watching is missed. Controllers read only
from caches and react to handler callbacks by queueing keys.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubevisor.controller.kube import ApiError, Kube, Obj, Resource, key_of

log = logging.getLogger(__name__)

Handler = Callable[[Obj | None, Obj | None], None]
"""handler(old, new): add = (None, obj), update = (old, new), delete = (obj, None)."""


class Store:
    """A thread-safe key → object map with secondary indexes."""

    def __init__(self, indexers: dict[str, Callable[[Obj], Iterable[str]]] | None = None) -> None:
        self._lock = threading.RLock()
        self._items: dict[str, Obj] = {}
        self._indexers = dict(indexers or {})
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    def add_indexer(self, name: str, fn: Callable[[Obj], Iterable[str]]) -> None:
        with self._lock:
            self._indexers[name] = fn
            self._indices[name] = {}
            for key, obj in self._items.items():
                self._index_locked(name, key, obj)

    def _index_locked(self, name: str, key: str, obj: Obj) -> None:
        for value in self._indexers[name](obj):
            self._indices[name].setdefault(value, set()).add(key)

    def _unindex_locked(self, key: str, obj: Obj) -> None:
        for name, fn in self._indexers.items():
            for value in fn(obj):
                keys = self._indices[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indices[name][value]

    def put(self, obj: Obj) -> Obj | None:
        key = key_of(obj)
        with self._lock:
            old = self._items.get(key)
            if old is not None:
                self._unindex_locked(key, old)
            self._items[key] = obj
            for name in self._indexers:
                self._index_locked(name, key, obj)
            return old

    def remove(self, key: str) -> Obj | None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._unindex_locked(key, old)
            return old

    def get(self, key: str) -> Obj | None:
        """A deep copy: callers may mutate what they get without corrupting the cache."""
        with self._lock:
            obj = self._items.get(key)
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self) -> list[Obj]:
        with self._lock:
            return [copy.deepcopy(o) for o in self._items.values()]

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def by_index(self, name: str, value: str) -> list[Obj]:
        with self._lock:
            return [copy.deepcopy(self._items[k]) for k in sorted(self._indices[name].get(value, ()))]

    def replace(self, objs: list[Obj]) -> list[tuple[Obj | None, Obj | None]]:
        """Swap in a fresh list; return the (old, new) changes it implies."""
        changes: list[tuple[Obj | None, Obj | None]] = []
        with self._lock:
            fresh = {key_of(o): o for o in objs}
            for key in list(self._items):
                if key not in fresh:
                    changes.append((self.remove(key), None))
            for key, obj in fresh.items():
                old = self._items.get(key)
                if old is None or _rv(old) != _rv(obj):
                    self.put(obj)
                    changes.append((old, obj))
        return changes


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def controller_owner_uid(obj: Obj) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def by_controller_uid(obj: Obj) -> list[str]:
    uid = controller_owner_uid(obj)
    return [uid] if uid else []


def by_namespace(obj: Obj) -> list[str]:
    ns = (obj.get("metadata") or {}).get("namespace")
    return [ns] if ns else []


@dataclass
class Informer:
    kube: Kube
    resource: Resource
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None
    watch_timeout: int = 60
    store: Store = field(default_factory=Store)
    handlers: list[Handler] = field(default_factory=list)
    relists: int = 0
    _synced: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _response: Any = None
    _resource_version: str = ""

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    @property
    def name(self) -> str:
        return self.resource.plural

    def has_synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the loop -----------------------------------------------------------------------
    def _dispatch(self, old: Obj | None, new: Obj | None) -> None:
        for handler in self.handlers:
            try:
                handler(old, new)
            except Exception:
                log.exception("informer %s: handler failed", self.name)

    def _list(self) -> None:
        result = self.kube.list(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        items = result.get("items") or []
        for item in items:
            # Lists carry apiVersion/kind on the list only; make items self-describing.
            item.setdefault("apiVersion", self.resource.api_version)
            item.setdefault("kind", self.resource.kind)
        self._resource_version = str((result.get("metadata") or {}).get("resourceVersion") or "")
        self.relists += 1
        for old, new in self.store.replace(items):
            self._dispatch(old, new)
        self._synced.set()

    def _apply(self, event: Obj) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        rv = _rv(obj)
        if kind == "BOOKMARK":
            if rv:
                self._resource_version = rv
            return
        if rv:
            self._resource_version = rv
        if kind in ("ADDED", "MODIFIED"):
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
            old = self.store.put(obj)
            self._dispatch(old, obj)
        elif kind == "DELETED":
            old = self.store.remove(key_of(obj))
            self._dispatch(old if old is not None else obj, None)

    def _set_response(self, response: Any) -> None:
        self._response = response

    def _run(self) -> None:
        backoff = 0.2
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                for event in self.kube.watch(
                    self.resource,
                    self._resource_version,
                    namespace=self.namespace,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    timeout_seconds=self.watch_timeout,
                    on_response=self._set_response,
                ):
                    if self._stop.is_set():
                        break
                    self._apply(event)
                backoff = 0.2
            except ApiError as exc:
                if exc.gone:
                    log.info(
                        "informer %s: resourceVersion %s too old, re-listing",
                        self.name,
                        self._resource_version,
                    )
                    need_list = True
                    continue
                log.warning("informer %s: %s", self.name, exc)
                need_list = need_list or exc.status in (0, 500, 503)
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.warning("informer %s: watch failed: %s", self.name, exc)
            finally:
                self._response = None
            if self._stop.is_set():
                break
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)


class InformerFactory:
    """One shared informer per resource, so controllers share caches."""

    def __init__(self, kube: Kube, *, watch_timeout: int = 60) -> None:
        self.kube = kube
        self.watch_timeout = watch_timeout
        self._informers: dict[Resource, Informer] = {}

    def informer(self, resource: Resource) -> Informer:
        inf = self._informers.get(resource)
        if inf is None:
            inf = Informer(self.kube, resource, watch_timeout=self.watch_timeout)
            self._informers[resource] = inf
        return inf

    def start(self) -> None:
        for inf in self._informers.values():
            inf.start()

    def wait_synced(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for inf in self._informers.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not inf.wait_synced(left):
                return False
        return True

    def stop(self) -> None:
        for inf in self._informers.values():
            inf.stop()
