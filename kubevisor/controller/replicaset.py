"""VMIRS controller: keeps `spec.replicas` VMIs matching the selector, scales up and down.

VMIs are owned through a controller ownerReference; orphans that match the selector are
adopted. Creates and deletes are recorded as expectations first, so the lag of the cache
never makes the set overshoot.
"""

from __future__ import annotations

import logging

from kubevisor.controller.base import Controller, controller_ref, timestamp
from kubevisor.controller.context import ControllerContext
from kubevisor.controller.expectations import Expectations
from kubevisor.controller.informer import by_controller_uid, by_namespace, controller_owner_uid
from kubevisor.controller.kube import VMIRS, VMIS, ApiError, Obj, key_of
from kubevisor.controller.launcher_pod import random_suffix
from kubevisor.controller.replicas import compute_status, matches, plan, vmi_from_template
from kubevisor.controller.vm_status import semantically_equal
from kubevisor.controller.vmi_status import being_deleted, is_final

log = logging.getLogger(__name__)

KIND = "VirtualMachineInstanceReplicaSet"


ORPHANS = "orphans-by-namespace"


def orphan_namespace(obj: Obj) -> list[str]:
    """The namespace of a VMI that no controller owns (one a replica set may adopt)."""
    return [] if controller_owner_uid(obj) else by_namespace(obj)


class ReplicaSetController(Controller):
    name = "vmirs"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.kube = ctx.kube
        self.recorder = ctx.recorder
        self.expectations = Expectations()
        self.sets = ctx.informers.informer(VMIRS)
        self.vmis = ctx.informers.informer(VMIS)
        self.vmis.store.add_indexer("controller-uid", by_controller_uid)
        self.vmis.store.add_indexer(ORPHANS, orphan_namespace)
        self.sets.add_handler(self._on_set)
        self.vmis.add_handler(self._on_vmi)

    def _on_set(self, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        if obj is not None:
            self.enqueue(key_of(obj))

    def _on_vmi(self, old: Obj | None, new: Obj | None) -> None:
        vmi = new if new is not None else old
        if vmi is None:
            return
        ns = vmi["metadata"].get("namespace")
        ref = controller_ref(vmi)
        if ref is not None:
            if ref.get("kind") != KIND:
                return
            key = f"{ns}/{ref['name']}"
            if old is None and new is not None:
                self.expectations.creation_observed(key)
            elif new is None or (being_deleted(new) and not being_deleted(old)):
                # A deletionTimestamp counts: finalizers may keep the object around for long.
                self.expectations.deletion_observed(key, key_of(vmi))
            self.enqueue(key)
            return
        for rs in self.sets.store.objects():  # an orphan: whoever selects it may adopt it
            if rs["metadata"].get("namespace") == ns and matches(rs, vmi):
                self.enqueue(key_of(rs))

    def _owned(self, rs: Obj) -> list[Obj]:
        owned = self.vmis.store.by_index("controller-uid", str(rs["metadata"].get("uid")))
        ns = rs["metadata"].get("namespace")
        if being_deleted(rs):
            return owned
        for vmi in self.vmis.store.by_index(ORPHANS, str(ns)):  # not every VMI: only adoptable ones
            if (
                controller_ref(vmi) is None
                and matches(rs, vmi)
                and not being_deleted(vmi)
                and not is_final(vmi)
            ):
                owned.append(self._adopt(rs, vmi))
        return owned

    def _adopt(self, rs: Obj, vmi: Obj) -> Obj:
        refs = list(vmi["metadata"].get("ownerReferences") or [])
        refs.append(
            {
                "apiVersion": "kubevirt.io/v1",
                "kind": KIND,
                "name": rs["metadata"]["name"],
                "uid": rs["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        )
        patch = {
            "metadata": {"ownerReferences": refs, "resourceVersion": vmi["metadata"].get("resourceVersion")}
        }
        return self.kube.patch(VMIS, vmi["metadata"].get("namespace"), vmi["metadata"]["name"], patch)

    def reconcile(self, key: str) -> float | None:
        rs = self.sets.store.get(key)
        if rs is None:
            self.expectations.delete(key)
            return None
        if being_deleted(rs):
            return None  # the garbage collector removes the owned VMIs
        vmis = self._owned(rs)
        failure: str | None = None
        again: float | None = None
        if self.expectations.satisfied(key):
            todo = plan(rs, vmis)
            failure = self._create(key, rs, todo.create)
            self._delete(key, rs, todo.delete)
        else:
            again = self.expectations.time_left(key) or None
        status = compute_status(rs, vmis, failure, timestamp())
        if not semantically_equal(status, rs.get("status") or {}):
            rs["status"] = status
            try:
                self.kube.update_status(VMIRS, rs)
            except ApiError as exc:
                if not exc.not_found:
                    raise
        return again

    def _create(self, key: str, rs: Obj, count: int) -> str | None:
        if count <= 0:
            return None
        ns = rs["metadata"].get("namespace") or "default"
        self.expectations.expect_creations(key, count)
        failure = None
        for _ in range(count):
            body = vmi_from_template(rs, random_suffix())
            try:
                created = self.kube.create(VMIS, ns, body)
            except ApiError as exc:
                self.expectations.creation_observed(key)
                failure = f"Error creating VMI: {exc.message or exc}"
                self.recorder.warning(rs, "FailedCreate", failure)
                if exc.status >= 500 or exc.status in (0, 429):
                    raise
                continue
            self.recorder.normal(
                rs, "SuccessfulCreate", f"Created virtual machine instance {created['metadata']['name']}"
            )
        return failure

    def _delete(self, key: str, rs: Obj, victims: list[Obj]) -> None:
        for vmi in victims:
            meta = vmi["metadata"]
            self.expectations.expect_deletions(key, [key_of(vmi)])
            try:
                self.kube.delete(VMIS, meta.get("namespace"), meta["name"], uid=meta.get("uid"))
            except ApiError as exc:
                self.expectations.deletion_observed(key, key_of(vmi))
                if exc.not_found or exc.conflict:
                    continue
                raise
            self.recorder.normal(rs, "SuccessfulDelete", f"Deleted virtual machine instance {meta['name']}")
