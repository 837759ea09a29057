"""Built-in controllers, in-process: namespace lifecycle, garbage collection, CRD status.

They consume the storage's event stream directly (one watcher, re-listing if it falls
behind) and write through the registry, like any client would, so admission and
finalizer rules apply to them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from typing import Any

from kubevisor.apiserver.errors import APIError
from kubevisor.apiserver.registry import CRD_CLEANUP_FINALIZER, Registry, WriteOptions, now, old_key
from kubevisor.apiserver.resources import ResourceType
from kubevisor.apiserver.storage import Storage, WatchEvent

log = logging.getLogger(__name__)
Obj = dict[str, Any]
CRD_PREFIX = "/apiextensions.k8s.io/customresourcedefinitions/"
NS_PREFIX = "/core/namespaces/"


def _opts(manager: str) -> WriteOptions:
    return WriteOptions(field_manager=manager, field_validation="Ignore", user="system:controller")


class Controllers:
    def __init__(self, storage: Storage, registry: Registry, resync: float = 2.0) -> None:
        self.storage = storage
        self.registry = registry
        self.resync = resync
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._queued: set[tuple[str, str]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        # GC indexes
        self._uids: dict[str, str] = {}  # uid -> key
        self._dependents: dict[str, set[str]] = {}  # owner uid -> dependent keys

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch_loop(), name="controllers-watch"),
            asyncio.create_task(self._work_loop(), name="controllers-work"),
            asyncio.create_task(self._resync_loop(), name="controllers-resync"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _enqueue(self, what: str, key: str) -> None:
        item = (what, key)
        if item not in self._queued:
            self._queued.add(item)
            self._queue.put_nowait(item)

    # -- event intake ------------------------------------------------------------------------
    def _index(self, key: str, obj: Obj | None, prev: Obj | None) -> None:
        if prev is not None:
            for ref in (prev.get("metadata") or {}).get("ownerReferences") or []:
                deps = self._dependents.get(str(ref.get("uid")))
                if deps is not None:
                    deps.discard(key)
                    if not deps:
                        del self._dependents[str(ref.get("uid"))]
        if obj is not None:
            uid = (obj.get("metadata") or {}).get("uid")
            if uid:
                self._uids[uid] = key
            for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
                self._dependents.setdefault(str(ref.get("uid")), set()).add(key)

    def _full_sync(self) -> None:
        self._uids.clear()
        self._dependents.clear()
        pairs, _ = self.storage.scan("/")
        for key, obj in pairs:
            self._index(key, obj, None)
        for key, obj in pairs:
            self._observe(key, obj, None, deleted=False)

    def _observe(self, key: str, obj: Obj, prev: Obj | None, deleted: bool) -> None:
        meta = obj.get("metadata") or {}
        if key.startswith(CRD_PREFIX):
            self._enqueue("crd", key)
        if key.startswith(NS_PREFIX) and meta.get("deletionTimestamp") and not deleted:
            self._enqueue("ns", key)
        ns = meta.get("namespace")
        if deleted and ns:
            ns_key = f"{NS_PREFIX}-/{ns}"
            ns_obj = self.storage.get(ns_key)
            if ns_obj is not None and ns_obj["metadata"].get("deletionTimestamp"):
                self._enqueue("ns", ns_key)
        fins = meta.get("finalizers") or []
        if (
            not deleted
            and meta.get("deletionTimestamp")
            and ("foregroundDeletion" in fins or "orphan" in fins)
        ):
            self._enqueue("owner", key)
        if deleted:
            uid = meta.get("uid")
            if uid:
                self._uids.pop(uid, None)
                for dep in list(self._dependents.get(uid, ())):
                    self._enqueue("dependent", dep)
            for ref in meta.get("ownerReferences") or []:
                owner_key = self._uids.get(str(ref.get("uid")))
                if owner_key is not None:
                    self._enqueue("owner", owner_key)
        elif meta.get("ownerReferences") and prev is None:
            self._enqueue("dependent", key)

    async def _watch_loop(self) -> None:
        while True:
            self._full_sync()
            watcher, _ = self.storage.watch("/", self.storage.revision)
            try:
                while True:
                    item = await watcher.next(None)
                    if item is None:
                        break  # fell behind: re-list
                    _, event = item
                    self._handle(event)
            finally:
                watcher.close()

    def _handle(self, event: WatchEvent) -> None:
        deleted = event.type == "DELETED"
        self._index(event.key, None if deleted else event.obj, event.prev if not deleted else event.obj)
        self._observe(event.key, event.obj, event.prev, deleted)

    async def _resync_loop(self) -> None:
        """Terminating namespaces and CRDs with remaining content are retried periodically."""
        while True:
            await asyncio.sleep(self.resync)
            for key, obj in self.storage.scan(NS_PREFIX)[0]:
                if obj["metadata"].get("deletionTimestamp"):
                    self._enqueue("ns", key)
            for key, obj in self.storage.scan(CRD_PREFIX)[0]:
                if obj["metadata"].get("deletionTimestamp"):
                    self._enqueue("crd", key)

    async def _work_loop(self) -> None:
        while True:
            item = await self._queue.get()
            self._queued.discard(item)
            what, key = item
            try:
                if what == "crd":
                    await self._crd(key)
                elif what == "ns":
                    await self._namespace(key)
                elif what == "owner":
                    await self._owner(key)
                elif what == "dependent":
                    await self._dependent(key)
            except APIError as exc:
                if exc.code not in (404, 409):
                    log.warning("controller %s %s: %s", what, key, exc.message)
            except Exception:
                log.exception("controller %s %s failed", what, key)

    # -- helpers ---------------------------------------------------------------------------
    def _type_of_key(self, key: str) -> ResourceType | None:
        for rt in self.registry.storage_types():
            if key.startswith(rt.storage_prefix):
                return rt
        return None

    async def _update(self, key: str, change: Any, sub: str = "") -> None:
        """Apply `change(obj)` (in place) with retries on conflicts."""
        rt = self._type_of_key(key)
        if rt is None:
            return
        for _ in range(10):
            old = self.storage.get(key)
            if old is None:
                return
            new = copy.deepcopy(old)
            if change(new) is False:
                return
            try:
                await self.registry._commit_update(rt, old, new, sub, _opts("kubevisor-controllers"))
                return
            except APIError as exc:
                if exc.reason != "Conflict":
                    raise
                await asyncio.sleep(0.01)

    async def _delete(self, key: str, policy: str = "Background") -> None:
        rt = self._type_of_key(key)
        obj = self.storage.get(key)
        if rt is None or obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        meta = obj["metadata"]
        try:
            await self.registry.delete(
                rt,
                meta.get("namespace", "") if rt.namespaced else "",
                meta["name"],
                {"propagationPolicy": policy, "gracePeriodSeconds": 0},
                _opts("kubevisor-controllers"),
            )
        except APIError as exc:
            if exc.code != 404:
                raise

    # -- CRD status and cleanup ---------------------------------------------------------------
    async def _crd(self, key: str) -> None:
        crd = self.storage.get(key)
        if crd is None:
            return
        if crd["metadata"].get("deletionTimestamp"):
            await self._crd_cleanup(key, crd)
            return
        spec = crd.get("spec") or {}
        storage_version = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), None)

        def set_status(obj: Obj) -> bool:
            status = obj.setdefault("status", {})
            before = copy.deepcopy(status)
            names = dict(spec.get("names") or {})
            names.setdefault("singular", str(names.get("kind", "")).lower())
            names.setdefault("listKind", f"{names.get('kind', '')}List")
            status["acceptedNames"] = names
            stored = list(status.get("storedVersions") or [])
            if storage_version and storage_version not in stored:
                stored.append(storage_version)
            status["storedVersions"] = stored
            conds = {c.get("type"): c for c in status.get("conditions") or []}
            for ctype, reason, msg in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ):
                cur = conds.get(ctype)
                if cur is None or cur.get("status") != "True":
                    conds[ctype] = {
                        "type": ctype,
                        "status": "True",
                        "lastTransitionTime": now(),
                        "reason": reason,
                        "message": msg,
                    }
            status["conditions"] = list(conds.values())
            return status != before

        await self._update(key, set_status, "status")

    async def _crd_cleanup(self, key: str, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        prefix = f"/{spec.get('group')}/{names.get('plural')}/"
        remaining = self.storage.scan(prefix)[0]
        types = self.registry.custom.get(crd["metadata"]["name"], [])
        rt = next((t for t in types if t.version == t.storage_version), types[0] if types else None)
        if remaining and rt is not None:
            for item_key, obj in remaining:
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                meta = obj["metadata"]
                try:
                    await self.registry.delete(
                        rt, meta.get("namespace", ""), meta["name"], {}, _opts("kubevisor-controllers")
                    )
                except APIError as exc:
                    if exc.code != 404:
                        log.warning("deleting %s: %s", item_key, exc.message)
            return
        if remaining:
            return

        def drop(obj: Obj) -> bool:
            fins = obj["metadata"].get("finalizers") or []
            if CRD_CLEANUP_FINALIZER not in fins:
                return False
            obj["metadata"]["finalizers"] = [f for f in fins if f != CRD_CLEANUP_FINALIZER]
            return True

        await self._update(key, drop)

    # -- namespaces ----------------------------------------------------------------------------
    async def _namespace(self, key: str) -> None:
        ns = self.storage.get(key)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        name = ns["metadata"]["name"]
        remaining = 0
        for rt in self.registry.storage_types():
            if not rt.namespaced:
                continue
            for item_key, obj in self.storage.scan(rt.prefix(name))[0]:
                remaining += 1
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    await self.registry.delete(
                        rt,
                        name,
                        obj["metadata"]["name"],
                        {"propagationPolicy": "Background", "gracePeriodSeconds": 0},
                        _opts("kubevisor-namespace-controller"),
                    )
                except APIError as exc:
                    if exc.code != 404:
                        log.warning("namespace %s: deleting %s: %s", name, item_key, exc.message)
        if remaining:
            # anything deleted above emits DELETED events that requeue us; finalizers wait for resync
            return
        if "kubernetes" in ((ns.get("spec") or {}).get("finalizers") or []):
            opts = _opts("kubevisor-namespace-controller")
            fins = [f for f in ns["spec"]["finalizers"] if f != "kubernetes"]
            try:
                await self.registry.finalize_namespace(name, fins, opts)
            except APIError as exc:
                if exc.code not in (404, 409):
                    raise

    # -- garbage collection ----------------------------------------------------------------------
    async def _dependent(self, key: str) -> None:
        obj = self.storage.get(key)
        if obj is None:
            return
        refs = obj["metadata"].get("ownerReferences") or []
        if not refs:
            return
        alive = [r for r in refs if str(r.get("uid")) in self._uids]
        if not alive:
            await self._delete(key)

    async def _owner(self, key: str) -> None:
        owner = self.storage.get(key)
        if owner is None or not owner["metadata"].get("deletionTimestamp"):
            return
        uid = owner["metadata"]["uid"]
        fins = owner["metadata"].get("finalizers") or []
        deps = [d for d in self._dependents.get(uid, set()) if self.storage.get(d) is not None]
        if "orphan" in fins:
            for dep in deps:

                def strip(obj: Obj, uid: str = uid) -> bool:
                    refs = obj["metadata"].get("ownerReferences") or []
                    kept = [r for r in refs if r.get("uid") != uid]
                    if len(kept) == len(refs):
                        return False
                    if kept:
                        obj["metadata"]["ownerReferences"] = kept
                    else:
                        obj["metadata"].pop("ownerReferences", None)
                    return True

                await self._update(dep, strip)
            await self._update(key, lambda o: _drop_finalizer(o, "orphan"))
            return
        if "foregroundDeletion" in fins:
            blocking = []
            for dep in deps:
                dep_obj = self.storage.get(dep)
                if dep_obj is None:
                    continue
                blocking.append(dep)
                await self._delete(dep, "Foreground")
            if not [d for d in blocking if self.storage.get(d) is not None]:
                await self._update(key, lambda o: _drop_finalizer(o, "foregroundDeletion"))


def _drop_finalizer(obj: Obj, name: str) -> bool:
    fins = obj["metadata"].get("finalizers") or []
    if name not in fins:
        return False
    obj["metadata"]["finalizers"] = [f for f in fins if f != name]
    return True


__all__ = ["Controllers", "old_key"]
