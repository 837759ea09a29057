"""Embedded scheduler: binds pending pods to nodes through the `pods/binding` subresource.

Only for embedded mode (a real cluster has kube-scheduler; leave this controller out
there). Pods of our scheduler names without a node are filtered and scored by
`scheduling.schedule`. A binding is "assumed" at once so the next decision counts its
resources even before the pod cache shows it bound. A pod that fits nowhere gets the
PodScheduled=False/Unschedulable condition and a FailedScheduling event, and is retried
when nodes or pods change (and every RETRY_UNSCHEDULABLE seconds).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from kubevisor.controller.base import Controller, timestamp
from kubevisor.controller.context import ControllerContext
from kubevisor.controller.kube import NODES, PODS, ApiError, Obj, key_of, split_key
from kubevisor.controller.scheduling import (
    NodeUsage,
    is_terminal,
    pod_requests,
    schedule,
    unschedulable_condition,
)
from kubevisor.controller.vmi_status import being_deleted, pod_condition

log = logging.getLogger(__name__)

RETRY_UNSCHEDULABLE = 15.0


class SchedulerController(Controller):
    name = "scheduler"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.kube = ctx.kube
        self.recorder = ctx.recorder
        self.names = set(ctx.settings.scheduler_names)
        self.pods = ctx.informers.informer(PODS)
        self.nodes = ctx.informers.informer(NODES)
        self._assumed: dict[str, tuple[str, dict[str, int]]] = {}
        # Kept current from pod events, so that a decision costs O(nodes), not O(pods) (a copy of
        # every cached pod per decision made 10,000 VMIs quadratic): usage and pending pods' keys.
        self._usage_of_bound = NodeUsage()
        self._pending_keys: set[str] = set()
        self._lock = threading.Lock()
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(self._on_node)

    def _ours(self, pod: Obj) -> bool:
        spec = pod.get("spec") or {}
        return (spec.get("schedulerName") or "default-scheduler") in self.names

    def _pending(self, pod: Obj) -> bool:
        spec = pod.get("spec") or {}
        return (
            not spec.get("nodeName") and not is_terminal(pod) and not being_deleted(pod) and self._ours(pod)
        )

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        pod = new if new is not None else old
        if pod is None:
            return
        key = key_of(pod)
        pending = new is not None and self._pending(new)
        with self._lock:
            self._usage_of_bound.update(key, new)
            if pending:
                self._pending_keys.add(key)
            else:
                self._pending_keys.discard(key)
            if new is not None and (new.get("spec") or {}).get("nodeName"):
                self._assumed.pop(key, None)  # the cache caught up with our binding
            freed = new is None or is_terminal(new)
            if freed:
                self._assumed.pop(key, None)
        if pending:
            self.enqueue(key)
        if freed:
            self._retry_all()

    def _on_node(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None:
            self._retry_all()

    def _retry_all(self) -> None:
        with self._lock:
            keys = sorted(self._pending_keys)
        for key in keys:
            self.enqueue(key)

    def _usage(self) -> dict[str, Counter[str]]:
        """Requests per node: the bound pods the cache shows, plus our bindings it does not show yet."""
        with self._lock:
            used = self._usage_of_bound.snapshot()
            for node, requests in self._assumed.values():
                used.setdefault(node, Counter()).update(requests)
        return used

    def reconcile(self, key: str) -> float | None:
        pod = self.pods.store.get(key)
        if pod is None or not self._pending(pod):
            return None
        with self._lock:
            if key in self._assumed:
                return None  # bound by us; the cache has not caught up yet
        nodes = sorted(self.nodes.store.objects(), key=lambda n: str(n["metadata"]["name"]))
        decision = schedule(pod, nodes, self._usage())
        ns, name = split_key(key)
        if decision.node is None:
            self._mark_unschedulable(pod, decision.message)
            return RETRY_UNSCHEDULABLE
        with self._lock:
            self._assumed[key] = (decision.node, pod_requests(pod))
        try:
            self.kube.bind(ns or "default", name, decision.node, pod["metadata"].get("uid"))
        except ApiError as exc:
            with self._lock:
                self._assumed.pop(key, None)
            if exc.conflict or exc.not_found:
                return None  # bound elsewhere or gone
            raise
        self.recorder.normal(pod, "Scheduled", f"Successfully assigned {ns}/{name} to {decision.node}")
        return None

    def _mark_unschedulable(self, pod: Obj, message: str) -> None:
        current = pod_condition(pod, "PodScheduled")
        if not (current and current.get("reason") == "Unschedulable" and current.get("message") == message):
            conditions = [
                c
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") != "PodScheduled"
            ]
            conditions.append(unschedulable_condition(message, timestamp()))
            meta = pod["metadata"]
            try:
                self.kube.patch(
                    PODS,
                    meta.get("namespace"),
                    meta["name"],
                    {"status": {"conditions": conditions}},
                    subresource="status",
                )
            except ApiError as exc:
                if not exc.not_found:
                    raise
        self.recorder.warning(pod, "FailedScheduling", message)
