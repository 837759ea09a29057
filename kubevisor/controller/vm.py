"""VM controller: keeps each VM's VMI as its runStrategy says and reports the VM's status.

The VMI has the VM's name, so a second create can only fail with AlreadyExists: a
controller killed mid-creation and restarted never makes a duplicate. A same-named VMI
without a controller is adopted (ownerReference patched in). Creates and deletes are
recorded as expectations; until the cache shows them the VM is reported Starting/Stopping
and no further action is taken. A VM with an instancetype/preference starts a VMI with them
expanded (controller.instancetypes); one that is missing is a FailedCreate, retried.
"""

from __future__ import annotations

import logging
import random

from kubevisor.controller.base import Controller, controller_ref, utcnow
from kubevisor.controller.context import ControllerContext
from kubevisor.controller.expectations import Expectations
from kubevisor.controller.instancetypes import ExpandError, expand_for_start
from kubevisor.controller.kube import JSON_PATCH, VMIS, VMS, ApiError, Obj, key_of
from kubevisor.controller.run_strategy import (
    START,
    VM_CONTROLLER_FINALIZER,
    RunStrategyError,
    decide,
    first_request,
    vmi_from_vm,
)
from kubevisor.controller.vm_status import Expecting, compute_vm_status, semantically_equal
from kubevisor.controller.vmi_status import being_deleted, is_final

log = logging.getLogger(__name__)

START_RETRY_SECONDS = 5.0


class VMController(Controller):
    name = "vm"
    workers = 2

    def __init__(self, ctx: ControllerContext, rng: random.Random | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.kube = ctx.kube
        self.recorder = ctx.recorder
        self.rng = rng or random.Random()
        self.expectations = Expectations()
        # The latest start failure we wrote, per VM uid: the cache may not show it yet when
        # the next reconcile decides whether the crash-loop back-off allows a start.
        self._start_failures: dict[str, Obj] = {}
        self.vms = ctx.informers.informer(VMS)
        self.vmis = ctx.informers.informer(VMIS)
        self.vms.add_handler(self._on_vm)
        self.vmis.add_handler(self._on_vmi)

    def _on_vm(self, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        if obj is None:
            return
        if new is None:
            self._start_failures.pop(str(obj["metadata"].get("uid")), None)
        self.enqueue(key_of(obj))

    def _on_vmi(self, old: Obj | None, new: Obj | None) -> None:
        vmi = new if new is not None else old
        if vmi is None:
            return
        ref = controller_ref(vmi)
        if ref is not None and ref.get("kind") != "VirtualMachine":
            return
        # Owned VMIs map to their VM; orphans may be adopted by a same-named VM.
        key = f"{vmi['metadata'].get('namespace')}/{ref['name'] if ref else vmi['metadata']['name']}"
        if old is None and new is not None:
            self.expectations.creation_observed(key)
        elif new is None or (being_deleted(new) and not being_deleted(old)):
            # A deletionTimestamp counts: finalizers may keep the object around for long.
            self.expectations.deletion_observed(key, key_of(vmi))
        self.enqueue(key)

    # -- reconcile -----------------------------------------------------------------
    def _find_vmi(self, vm: Obj) -> tuple[Obj | None, tuple[str, str] | None]:
        vmi = self.vmis.store.get(key_of(vm))
        if vmi is None:
            return None, None
        ref = controller_ref(vmi)
        vm_uid = vm["metadata"].get("uid")
        if ref is None:
            if being_deleted(vm) or being_deleted(vmi):
                return None, None
            return self._adopt(vm, vmi), None
        if ref.get("uid") != vm_uid:
            return None, (
                "FailedCreate",
                f"VMI {vmi['metadata']['name']} exists and is controlled by another object",
            )
        return vmi, None

    def _adopt(self, vm: Obj, vmi: Obj) -> Obj:
        refs = list(vmi["metadata"].get("ownerReferences") or [])
        refs.append(
            {
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachine",
                "name": vm["metadata"]["name"],
                "uid": vm["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        )
        patch = {
            "metadata": {"ownerReferences": refs, "resourceVersion": vmi["metadata"].get("resourceVersion")}
        }
        adopted = self.kube.patch(VMIS, vmi["metadata"].get("namespace"), vmi["metadata"]["name"], patch)
        self.recorder.normal(
            vm, "SuccessfulAdopt", f"Adopted virtual machine instance {vmi['metadata']['name']}"
        )
        return adopted

    def reconcile(self, key: str) -> float | None:
        vm = self.vms.store.get(key)
        if vm is None:
            self.expectations.delete(key)
            return None
        self._apply_remembered_failure(vm)
        vmi, sync_error = self._find_vmi(vm)
        again: float | None = None
        now = utcnow()
        extra_request = False

        if self.expectations.satisfied(key) and sync_error is None:
            if being_deleted(vm):
                if vmi is not None:
                    self._stop(key, vm, vmi)
                else:
                    vm = self._set_finalizer(vm, present=False)
            else:
                vm = self._set_finalizer(vm, present=True)
                try:
                    action = decide(vm, vmi, now)
                except RunStrategyError as exc:
                    action = None
                    sync_error = ("FailedCreate", str(exc))
                if action is not None:
                    if action.stop and vmi is not None:
                        self._stop(key, vm, vmi)
                        extra_request = action.add_start_request
                    again = action.requeue_after
                    if action.start:
                        sync_error = self._start(key, vm)
                        if sync_error is not None and again is None:
                            again = START_RETRY_SECONDS  # e.g. its instancetype is created later
                    if action.set_running:
                        vm = self._set_running(vm)
        elif not self.expectations.satisfied(key):
            again = self.expectations.time_left(key) or None

        adds, dels = self.expectations.pending(key)
        if extra_request:
            requests = list((vm.get("status") or {}).get("stateChangeRequests") or [])
            vm.setdefault("status", {})["stateChangeRequests"] = [*requests, {"action": START}]
        status = compute_vm_status(
            vm, vmi, Expecting(start=adds > 0, stop=dels > 0), now, sync_error, self.rng
        )
        if extra_request and not status.get("stateChangeRequests"):
            status["stateChangeRequests"] = [{"action": START}]
        if not semantically_equal(status, vm.get("status") or {}) or extra_request:
            vm["status"] = status
            try:
                self.kube.update_status(VMS, vm)
            except ApiError as exc:
                if not exc.not_found:
                    raise
        if (
            vmi is not None
            and is_final(vmi)
            and VM_CONTROLLER_FINALIZER in (vmi["metadata"].get("finalizers") or [])
        ):
            self._release_vmi(vmi)
        uid = str(vm["metadata"].get("uid"))
        if status.get("startFailure"):
            self._start_failures[uid] = status["startFailure"]
        else:
            self._start_failures.pop(uid, None)
        return again

    def _apply_remembered_failure(self, vm: Obj) -> None:
        remembered = self._start_failures.get(str(vm["metadata"].get("uid")))
        if remembered is None:
            return
        cached = (vm.get("status") or {}).get("startFailure") or {}
        if int(cached.get("consecutiveFailCount") or 0) < int(remembered.get("consecutiveFailCount") or 0):
            vm.setdefault("status", {})["startFailure"] = dict(remembered)

    def _start(self, key: str, vm: Obj) -> tuple[str, str] | None:
        try:
            body = vmi_from_vm(expand_for_start(self.kube, vm))
        except ExpandError as exc:
            message = f"Error creating virtual machine instance: {exc}"
            self.recorder.warning(vm, "FailedCreate", message)
            return ("FailedCreate", message)
        request = first_request(vm)
        if request is not None and request.get("action") == START and (
            (request.get("data") or {}).get("paused") == "true"
        ):  # `virtctl start --paused`: the guest waits, stopped before its first instruction
            body["spec"]["startStrategy"] = "Paused"
        ns = body["metadata"]["namespace"]
        self.expectations.expect_creations(key, 1)
        try:
            self.kube.create(VMIS, ns, body)
        except ApiError as exc:
            self.expectations.creation_observed(key)
            if exc.already_exists:
                return None  # created before (perhaps by a previous instance of us): the cache will show it
            message = f"Error creating virtual machine instance: {exc.message or exc}"
            self.recorder.warning(vm, "FailedCreate", message)
            if exc.status >= 500 or exc.status in (0, 429):
                raise
            return ("FailedCreate", message)
        self.recorder.normal(
            vm,
            "SuccessfulCreate",
            "Started the virtual machine by creating the new virtual machine instance "
            + body["metadata"]["name"],
        )
        return None

    def _stop(self, key: str, vm: Obj, vmi: Obj) -> None:
        if being_deleted(vmi):
            return
        meta = vmi["metadata"]
        self.expectations.expect_deletions(key, [key_of(vmi)])
        try:
            self.kube.delete(VMIS, meta.get("namespace"), meta["name"], uid=meta.get("uid"))
        except ApiError as exc:
            self.expectations.deletion_observed(key, key_of(vmi))
            if exc.not_found or exc.conflict:
                return
            self.recorder.warning(
                vm, "FailedDelete", f"Error deleting virtual machine instance {meta['name']}: {exc}"
            )
            raise
        self.recorder.normal(
            vm,
            "SuccessfulDelete",
            f"Stopped the virtual machine by deleting the virtual machine instance {meta.get('uid')}",
        )

    def _set_finalizer(self, vm: Obj, present: bool) -> Obj:
        finalizers = list(vm["metadata"].get("finalizers") or [])
        if (VM_CONTROLLER_FINALIZER in finalizers) == present:
            return vm
        new = (
            [*finalizers, VM_CONTROLLER_FINALIZER]
            if present
            else [f for f in finalizers if f != VM_CONTROLLER_FINALIZER]
        )
        patch = {"metadata": {"finalizers": new, "resourceVersion": vm["metadata"].get("resourceVersion")}}
        try:
            return self.kube.patch(VMS, vm["metadata"].get("namespace"), vm["metadata"]["name"], patch)
        except ApiError as exc:
            if exc.not_found:
                return vm
            raise

    def _set_running(self, vm: Obj) -> Obj:
        """Halted + a start request: become Always (or running: true for legacy VMs)."""
        spec = vm.get("spec") or {}
        ops: list[Obj] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": vm["metadata"]["resourceVersion"]}
        ]
        if "runStrategy" in spec:
            ops.append({"op": "replace", "path": "/spec/runStrategy", "value": "Always"})
        else:
            ops.append({"op": "add", "path": "/spec/running", "value": True})
        return self.kube.patch(
            VMS, vm["metadata"].get("namespace"), vm["metadata"]["name"], ops, content_type=JSON_PATCH
        )

    def _release_vmi(self, vmi: Obj) -> None:
        finalizers = [f for f in vmi["metadata"].get("finalizers") or [] if f != VM_CONTROLLER_FINALIZER]
        patch = {
            "metadata": {"finalizers": finalizers, "resourceVersion": vmi["metadata"].get("resourceVersion")}
        }
        try:
            self.kube.patch(VMIS, vmi["metadata"].get("namespace"), vmi["metadata"]["name"], patch)
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):
                raise
