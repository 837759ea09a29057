"""Kubernetes Events (`core/v1`) about the objects controllers act on, like client-go's recorder.

Repeats of the same (object, reason, message) within a process are folded into one Event
whose `count` and `lastTimestamp` advance, so a retrying controller does not flood the API.
Event writes are best effort: a failure is logged, never fails a reconcile.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading

from kubevisor.controller.kube import EVENTS, ApiError, Kube, Obj

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def involved_object(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    ref: Obj = {
        "apiVersion": obj.get("apiVersion", ""),
        "kind": obj.get("kind", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return ref


def build_event(
    obj: Obj, type_: str, reason: str, message: str, component: str, host: str | None = None
) -> Obj:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    now = _now()
    source: Obj = {"component": component}
    if host:
        source["host"] = host
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name', 'object')}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": involved_object(obj),
        "reason": reason,
        "message": message,
        "type": type_,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": host or component,
    }


class EventRecorder:
    def __init__(self, kube: Kube, component: str, host: str | None = None) -> None:
        self.kube = kube
        self.component = component
        self.host = host
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, str, str], Obj] = {}

    def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        fold_key = (uid, type_, reason, message)
        try:
            with self._lock:
                previous = self._seen.get(fold_key)
            if previous is not None:
                previous["count"] = int(previous.get("count") or 1) + 1
                previous["lastTimestamp"] = _now()
                patch = {"count": previous["count"], "lastTimestamp": previous["lastTimestamp"]}
                meta = previous["metadata"]
                try:
                    self.kube.patch(EVENTS, meta["namespace"], meta["name"], patch)
                    return
                except ApiError as exc:
                    if not exc.not_found:
                        raise
            body = build_event(obj, type_, reason, message, self.component, self.host)
            created = self.kube.create(EVENTS, body["metadata"]["namespace"], body)
            with self._lock:
                if len(self._seen) > 4096:
                    self._seen.clear()
                self._seen[fold_key] = created
        except Exception as exc:
            log.warning("event %s %s on %s: %s", type_, reason, involved_object(obj).get("name"), exc)

    def normal(self, obj: Obj, reason: str, message: str) -> None:
        self.event(obj, NORMAL, reason, message)

    def warning(self, obj: Obj, reason: str, message: str) -> None:
        self.event(obj, WARNING, reason, message)
