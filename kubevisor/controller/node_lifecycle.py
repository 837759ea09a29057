"""Node lifecycle controller: a node whose agent stops heart-beating goes NotReady and its
VMIs fail with reason NodeUnresponsive (KubeVirt's node controller), so that their VMs can
be restarted elsewhere. A node that heart-beats again loses the unreachable taints.
"""

from __future__ import annotations

import logging

from kubevisor.controller.base import Controller, timestamp, utcnow
from kubevisor.controller.context import ControllerContext
from kubevisor.controller.kube import LEASES, NODES, VMIS, ApiError, Obj, key_of
from kubevisor.controller.node_health import (
    NODE_UNRESPONSIVE_REASON,
    failed_vmi_status,
    marked_unreachable,
    not_ready_patch,
    reachable_taints,
    seconds_until_stale,
    vmis_to_fail,
)

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"


class NodeLifecycleController(Controller):
    name = "node-lifecycle"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.kube = ctx.kube
        self.recorder = ctx.recorder
        self.timeout = ctx.settings.node_heartbeat_timeout
        self.nodes = ctx.informers.informer(NODES)
        self.leases = ctx.informers.informer(LEASES)
        self.vmis = ctx.informers.informer(VMIS)
        self.nodes.add_handler(self._on_node)
        self.leases.add_handler(self._on_lease)
        self.vmis.add_handler(self._on_vmi)

    def _on_node(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None:
            self.enqueue(key_of(new))

    def _on_lease(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None and new["metadata"].get("namespace") == NODE_LEASE_NAMESPACE:
            self.enqueue(str(new["metadata"]["name"]))

    def _on_vmi(self, old: Obj | None, new: Obj | None) -> None:
        node = ((new or {}).get("status") or {}).get("nodeName")
        if node:
            self.enqueue(str(node))

    def reconcile(self, key: str) -> float | None:
        node = self.nodes.store.get(key)
        if node is None:
            return None
        lease = self.leases.store.get(f"{NODE_LEASE_NAMESPACE}/{key}")
        left = seconds_until_stale(node, lease, utcnow(), self.timeout)
        if left > 0:
            if marked_unreachable(node):
                self._patch_node(node, {"spec": {"taints": reachable_taints(node)}})
                self.recorder.normal(node, "NodeReady", f"Node {key} is heart-beating again")
            return left + 0.5
        if not marked_unreachable(node):
            now = timestamp()
            conditions, taints = not_ready_patch(node, now)
            self._patch_node(node, {"status": {"conditions": conditions}}, subresource="status")
            self._patch_node(node, {"spec": {"taints": taints}})
            self.recorder.warning(node, "NodeNotReady", f"Node {key} status is now: NodeNotReady")
        for vmi in vmis_to_fail(key, self.vmis.store.objects()):
            self._fail_vmi(vmi)
        return self.timeout

    def _patch_node(self, node: Obj, patch: Obj, subresource: str | None = None) -> None:
        try:
            self.kube.patch(NODES, None, node["metadata"]["name"], patch, subresource=subresource)
        except ApiError as exc:
            if not exc.not_found:
                raise

    def _fail_vmi(self, vmi: Obj) -> None:
        vmi["status"] = failed_vmi_status(vmi, timestamp())
        try:
            self.kube.update_status(VMIS, vmi)
        except ApiError as exc:
            if exc.not_found:
                return
            raise
        node = vmi["status"].get("nodeName")
        self.recorder.warning(vmi, NODE_UNRESPONSIVE_REASON, f"virt-handler on node {node} is not responsive")
