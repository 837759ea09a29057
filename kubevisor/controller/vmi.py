"""VMI controller: creates each VMI's launcher Pod and drives the VMI phase from it.

Per VMI key: with no pod, check that its PVCs exist and create the pod (ownerReference to
the VMI, expectation recorded first so a lagging cache never causes a second pod); then
write the phase/conditions that `vmi_status.compute_status` derives from the pod, with an
Event for each step. A final VMI gets its pod deleted. A VMI being deleted gets its pods
deleted and, once they are gone, loses this controller's finalizer.
"""

from __future__ import annotations

import logging

from kubevisor.controller.base import Controller, controller_ref, timestamp
from kubevisor.controller.context import ControllerContext
from kubevisor.controller.expectations import Expectations
from kubevisor.controller.informer import by_controller_uid
from kubevisor.controller.kube import NODES, PODS, PVCS, VMIS, ApiError, Obj, key_of
from kubevisor.controller.launcher_pod import (
    NODE_NAME_LABEL,
    LauncherPodError,
    claim_names,
    random_suffix,
    render_launcher_pod,
)
from kubevisor.controller.node_health import marked_unreachable
from kubevisor.controller.own_writes import OwnWrites
from kubevisor.controller.vm_status import semantically_equal
from kubevisor.controller.vmi_status import (
    FINAL_PHASES,
    REASON_FAILED_CREATE,
    REASON_PVC_NOT_FOUND,
    RUNNING,
    SCHEDULED,
    being_deleted,
    compute_status,
    phase_event,
    phase_of,
    pod_phase,
)

log = logging.getLogger(__name__)

VMI_FINALIZER = "kubevirt.io/foregroundDeleteVirtualMachine"
PVC_RETRY_SECONDS = 5.0


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _by_uid(obj: Obj) -> list[str]:
    uid = _uid(obj)
    return [uid] if uid else []


class VMIController(Controller):
    name = "vmi"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.kube = ctx.kube
        self.recorder = ctx.recorder
        self.expectations = Expectations()
        self.own_writes = OwnWrites()
        self.vmis = ctx.informers.informer(VMIS)
        self.pods = ctx.informers.informer(PODS)
        self.nodes = ctx.informers.informer(NODES)
        self.pvcs = ctx.informers.informer(PVCS) if ctx.settings.check_pvcs else None
        self.vmis.store.add_indexer("uid", _by_uid)
        self.pods.store.add_indexer("controller-uid", by_controller_uid)
        self.vmis.add_handler(self._on_vmi)
        self.pods.add_handler(self._on_pod)
        if self.pvcs is not None:
            self.pvcs.add_handler(self._on_pvc)

    # -- event handlers ------------------------------------------------------------
    def _on_vmi(self, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        if obj is not None:
            self.own_writes.observed(key_of(obj), new)
            self.enqueue(key_of(obj))

    def _owner_key(self, pod: Obj) -> str | None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "VirtualMachineInstance":
            return None
        ns = (pod.get("metadata") or {}).get("namespace")
        return f"{ns}/{ref['name']}"

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        pod = new if new is not None else old
        if pod is None:
            return
        key = self._owner_key(pod)
        if key is None:
            return
        if old is None and new is not None:
            self.expectations.creation_observed(key)
        elif new is None or (being_deleted(new) and not being_deleted(old)):
            # A deletionTimestamp counts: finalizers may keep the object around for long.
            self.expectations.deletion_observed(key, key_of(pod))
        self.enqueue(key)

    def _on_pvc(self, old: Obj | None, new: Obj | None) -> None:
        if new is None or old is not None:
            return
        ns = (new.get("metadata") or {}).get("namespace")
        for vmi in self.vmis.store.objects():
            meta = vmi.get("metadata") or {}
            if meta.get("namespace") == ns and (new.get("metadata") or {}).get("name") in claim_names(vmi):
                self.enqueue(key_of(vmi))

    # -- reconcile -----------------------------------------------------------------
    def _pods_of(self, vmi: Obj) -> list[Obj]:
        pods = self.pods.store.by_index("controller-uid", _uid(vmi))
        return sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))

    @staticmethod
    def _current_pod(pods: list[Obj]) -> Obj | None:
        live = [p for p in pods if pod_phase(p) not in ("Succeeded", "Failed")]
        if live:
            return live[-1]
        return pods[-1] if pods else None

    def reconcile(self, key: str) -> float | None:
        vmi = self.vmis.store.get(key)
        if vmi is None:
            self.expectations.delete(key)
            return None
        if not self.expectations.satisfied(key):
            return self.expectations.time_left(key) or None
        wait = self.own_writes.behind(key, vmi)
        if wait is not None:
            return wait  # our last write is on its way to the cache: its event re-queues the key
        pods = self._pods_of(vmi)
        pod = self._current_pod(pods)
        sync_error: tuple[str, str] | None = None
        again: float | None = None

        if being_deleted(vmi):
            self._delete_pods(key, vmi, pods)
            pod = None if not pods else pod
        else:
            vmi = self._ensure_finalizer(vmi)
            if phase_of(vmi) in FINAL_PHASES:
                self._delete_pods(key, vmi, [p for p in pods if pod_phase(p) not in ("Succeeded", "Failed")])
            elif pod is None and phase_of(vmi) in ("", "Pending"):
                sync_error, again = self._create_pod(key, vmi)

        old_phase = phase_of(vmi)
        status = compute_status(vmi, pod, timestamp(), sync_error)
        new_phase = status.get("phase", "")
        if not semantically_equal(status, vmi.get("status") or {}):
            vmi["status"] = status
            try:
                vmi = self.kube.update_status(VMIS, vmi)
                self.own_writes.wrote(key, vmi)
            except ApiError as exc:
                if exc.not_found:
                    return None
                raise
            event = phase_event(old_phase, new_phase)
            if event is not None:
                type_, reason, message = event
                self.recorder.event(vmi, type_, reason, message)
        if new_phase in (SCHEDULED, RUNNING):
            self._ensure_node_label(vmi, status.get("nodeName"))
        if being_deleted(vmi) and not pods:
            self._remove_finalizer(vmi)
        return again

    def _create_pod(self, key: str, vmi: Obj) -> tuple[tuple[str, str] | None, float | None]:
        ns = (vmi.get("metadata") or {}).get("namespace") or "default"
        if self.pvcs is not None:
            missing = [c for c in claim_names(vmi) if self.pvcs.store.get(f"{ns}/{c}") is None]
            if missing:
                message = f"PVC {ns}/{missing[0]} does not exist, waiting for it to appear"
                self.recorder.warning(vmi, REASON_PVC_NOT_FOUND, message)
                return (REASON_PVC_NOT_FOUND, message), PVC_RETRY_SECONDS
        try:
            pod = render_launcher_pod(vmi, self.ctx.settings.launcher, random_suffix())
        except LauncherPodError as exc:
            self.recorder.warning(vmi, REASON_FAILED_CREATE, f"Error creating pod: {exc}")
            return (REASON_FAILED_CREATE, str(exc)), None
        self.expectations.expect_creations(key, 1)
        try:
            created = self.kube.create(PODS, ns, pod)
        except ApiError as exc:
            self.expectations.creation_observed(key)
            self.recorder.warning(vmi, REASON_FAILED_CREATE, f"Error creating pod: {exc.message or exc}")
            if exc.status >= 500 or exc.status in (0, 429):
                raise
            return (REASON_FAILED_CREATE, exc.message or str(exc)), 10.0
        name = created.get("metadata", {}).get("name", pod["metadata"]["name"])
        self.recorder.normal(vmi, "SuccessfulCreate", f"Created virtual machine pod {name}")
        return None, None

    def _node_unreachable(self, pod: Obj) -> bool:
        node = self.nodes.store.get(str((pod.get("spec") or {}).get("nodeName") or ""))
        return node is not None and marked_unreachable(node)

    def _delete_pods(self, key: str, vmi: Obj, pods: list[Obj]) -> None:
        for pod in pods:
            if being_deleted(pod):
                if self._node_unreachable(pod):
                    # No agent will ever confirm this pod's end: finish its deletion (as pod GC does).
                    meta = pod["metadata"]
                    try:
                        self.kube.delete(PODS, meta.get("namespace"), meta["name"], grace_period_seconds=0)
                    except ApiError as exc:
                        if not exc.not_found:
                            raise
                continue
            meta = pod["metadata"]
            self.expectations.expect_deletions(key, [key_of(pod)])
            try:
                self.kube.delete(PODS, meta.get("namespace"), meta["name"], uid=meta.get("uid"))
            except ApiError as exc:
                self.expectations.deletion_observed(key, key_of(pod))
                if exc.not_found or exc.conflict:
                    continue
                raise
            self.recorder.normal(vmi, "SuccessfulDelete", f"Deleted virtual machine pod {meta['name']}")

    def _patch_meta(self, vmi: Obj, meta_patch: Obj) -> Obj:
        meta = vmi["metadata"]
        try:
            patched = self.kube.patch(VMIS, meta.get("namespace"), meta["name"], {"metadata": meta_patch})
            self.own_writes.wrote(key_of(vmi), patched)
            return patched
        except ApiError as exc:
            if not exc.not_found:
                raise
            return vmi

    def _ensure_finalizer(self, vmi: Obj) -> Obj:
        finalizers = list((vmi.get("metadata") or {}).get("finalizers") or [])
        if VMI_FINALIZER in finalizers:
            return vmi
        return self._patch_meta(
            vmi,
            {
                "finalizers": [*finalizers, VMI_FINALIZER],
                "resourceVersion": vmi["metadata"].get("resourceVersion"),
            },
        )

    def _remove_finalizer(self, vmi: Obj) -> None:
        finalizers = list((vmi.get("metadata") or {}).get("finalizers") or [])
        if VMI_FINALIZER in finalizers:
            self._patch_meta(
                vmi,
                {
                    "finalizers": [f for f in finalizers if f != VMI_FINALIZER],
                    "resourceVersion": vmi["metadata"].get("resourceVersion"),
                },
            )

    def _ensure_node_label(self, vmi: Obj, node: str | None) -> None:
        labels = (vmi.get("metadata") or {}).get("labels") or {}
        if node and labels.get(NODE_NAME_LABEL) != node:
            self._patch_meta(vmi, {"labels": {NODE_NAME_LABEL: node}})
