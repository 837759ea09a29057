"""Local-path provisioner: the `local-path` StorageClass (the default) and its volumes.

At start it creates the StorageClass `local-path` (annotated as the default class) unless it
exists. Per claim: a claim without `storageClassName` gets the default class written into it
(Kubernetes' retroactive default class assignment); a Pending claim of a class whose provisioner
is ours gets a PersistentVolume `pvc-<uid>` (hostPath directory under the base, required node
affinity to one node: the claim's `volume.kubernetes.io/selected-node`, else the first Ready
node), then the claim is bound to it (spec.volumeName, status Bound with capacity and access
modes). Per volume: once its claim is gone, reclaim policy Delete removes the directory and the
PV; Retain marks it Released.

The directories are made and removed by this process, so it runs on the machine that holds
them: embedded mode (`kubevisor up`), where the nodes and the controller share one host.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kubevisor import paths
from kubevisor.controller.base import Controller
from kubevisor.controller.context import ControllerContext
from kubevisor.controller.kube import NODES, PVCS, PVS, STORAGE_CLASSES, ApiError, Obj, key_of
from kubevisor.controller.vmi_status import being_deleted
from kubevisor.storage import local_path as lp

log = logging.getLogger(__name__)

CLASS_KEY = "sc"
NO_NODE_RETRY = 5.0


def _ready(node: Obj) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


class LocalPathProvisioner(Controller):
    name = "local-path"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.kube = ctx.kube
        self.recorder = ctx.recorder
        self.base = Path(ctx.settings.local_path_dir or paths.data_dir() / "local-path")
        self.claims = ctx.informers.informer(PVCS)
        self.volumes = ctx.informers.informer(PVS)
        self.classes = ctx.informers.informer(STORAGE_CLASSES)
        self.nodes = ctx.informers.informer(NODES)
        self.claims.add_handler(self._on_claim)
        self.volumes.add_handler(self._on_volume)
        self.classes.add_handler(self._on_class)

    # -- events -----------------------------------------------------------------------
    def _on_claim(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None:
            self.enqueue(f"pvc/{key_of(new)}")
            return
        if old is None:
            return
        name = (old.get("spec") or {}).get("volumeName")
        if name:
            self.enqueue(f"pv/{name}")

    def _on_volume(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None:
            self.enqueue(f"pv/{new['metadata']['name']}")

    def _on_class(self, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            return
        # A new default class: claims waiting without a class can get it now.
        for claim in self.claims.store.objects():
            if not (claim.get("spec") or {}).get("storageClassName"):
                self.enqueue(f"pvc/{key_of(claim)}")

    def start(self) -> None:
        self.enqueue(CLASS_KEY)
        for pv in self.volumes.store.objects():
            self.enqueue(f"pv/{pv['metadata']['name']}")
        super().start()

    # -- reconcile ----------------------------------------------------------------------
    def reconcile(self, key: str) -> float | None:
        if key == CLASS_KEY:
            self._ensure_class()
            return None
        kind, _, rest = key.partition("/")
        if kind == "pvc":
            return self._reconcile_claim(rest)
        if kind == "pv":
            return self._reconcile_volume(rest)
        return None

    def _ensure_class(self) -> None:
        if self.classes.store.get(lp.CLASS_NAME) is not None:
            return
        try:
            self.kube.create(STORAGE_CLASSES, None, lp.storage_class())
            log.info("created StorageClass %s (default)", lp.CLASS_NAME)
        except ApiError as exc:
            if not exc.already_exists:
                raise

    def _class_of(self, claim: Obj) -> Obj | None:
        name = (claim.get("spec") or {}).get("storageClassName")
        return self.classes.store.get(str(name)) if name else None

    def _reconcile_claim(self, key: str) -> float | None:
        claim = self.claims.store.get(key)
        if claim is None or being_deleted(claim):
            return None
        meta, spec = claim["metadata"], claim.setdefault("spec", {})
        if spec.get("storageClassName") is None:
            # Retroactive default StorageClass assignment (Kubernetes 1.28+): an unset class
            # (not "", which asks for no class) gets the default one.
            sc = lp.default_class(self.classes.store.objects())
            if sc is None or spec.get("volumeName"):
                return None
            self.kube.patch(
                PVCS, meta["namespace"], meta["name"], {"spec": {"storageClassName": sc["metadata"]["name"]}}
            )
            return None
        sc = self._class_of(claim)
        if sc is None or sc.get("provisioner") != lp.PROVISIONER:
            return None
        volume_name = spec.get("volumeName")
        if volume_name:
            pv = self.volumes.store.get(str(volume_name))
            if pv is None or (claim.get("status") or {}).get("phase") == "Bound":
                return None
            if ((pv.get("spec") or {}).get("claimRef") or {}).get("uid") == meta["uid"]:
                self._bind_status(claim, pv)
            return None
        pv_name = lp.pv_name(claim)
        pv = self.volumes.store.get(pv_name)
        if pv is None:
            try:
                directory = lp.volume_dir(self.base, claim)
                lp.requested_storage(claim)
            except lp.LocalPathError as exc:
                self.recorder.warning(claim, "ProvisioningFailed", str(exc))
                return None  # nothing to retry until the claim changes
            node = self._node_for(claim)
            if node is None:
                self.recorder.warning(
                    claim, "ProvisioningFailed", "waiting for a Ready node to hold the volume"
                )
                return NO_NODE_RETRY
            pv = self._provision(claim, sc, node, directory)
        annotations = {
            lp.BIND_COMPLETED: "yes",
            lp.BOUND_BY_CONTROLLER: "yes",
            lp.STORAGE_PROVISIONER: lp.PROVISIONER,
        }
        bound = self.kube.patch(
            PVCS,
            meta["namespace"],
            meta["name"],
            {
                "metadata": {"annotations": annotations, "resourceVersion": meta.get("resourceVersion")},
                "spec": {"volumeName": pv_name},
            },
        )
        self._bind_status(bound, pv)
        self.recorder.normal(
            claim,
            "ProvisioningSucceeded",
            f"Successfully provisioned volume {pv_name} ({lp.volume_path(pv)})",
        )
        return None

    def _bind_status(self, claim: Obj, pv: Obj) -> None:
        meta = claim["metadata"]
        self.kube.patch(
            PVCS,
            meta["namespace"],
            meta["name"],
            {"status": lp.bound_claim_status(claim, pv)},
            subresource="status",
        )

    def _node_for(self, claim: Obj) -> str | None:
        selected = ((claim["metadata"].get("annotations") or {}).get(lp.SELECTED_NODE)) or None
        if selected:
            return str(selected)
        ready = sorted(n["metadata"]["name"] for n in self.nodes.store.objects() if _ready(n))
        return ready[0] if ready else None

    def _provision(self, claim: Obj, sc: Obj, node: str, directory: Path) -> Obj:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # as local-path-provisioner: any pod user may write its volume
        body = lp.persistent_volume(claim, sc, node, directory)
        try:
            pv = self.kube.create(PVS, None, body)
        except ApiError as exc:
            if not exc.already_exists:
                raise
            pv = self.kube.get(PVS, None, body["metadata"]["name"])
        pv = self.kube.patch(
            PVS, None, pv["metadata"]["name"], {"status": {"phase": "Bound"}}, subresource="status"
        )
        log.info(
            "provisioned %s for %s at %s on node %s", pv["metadata"]["name"], key_of(claim), directory, node
        )
        return pv

    def _reconcile_volume(self, name: str) -> float | None:
        pv = self.volumes.store.get(name)
        if pv is None or being_deleted(pv) or not lp.is_ours(pv):
            return None
        claims = {key_of(c): c for c in self.claims.store.objects()}
        if not lp.claim_is_gone(pv, claims):
            return None
        policy = (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Delete"
        if policy != "Delete":
            if (pv.get("status") or {}).get("phase") != "Released":
                self.kube.patch(PVS, None, name, {"status": {"phase": "Released"}}, subresource="status")
            return None
        try:
            lp.remove_volume_dir(self.base, pv)
        except lp.LocalPathError as exc:
            log.warning("not deleting %s: %s", name, exc)
            self.kube.patch(
                PVS, None, name, {"status": {"phase": "Failed", "message": str(exc)}}, subresource="status"
            )
            return None
        try:
            self.kube.delete(PVS, None, name, uid=pv["metadata"].get("uid"))
        except ApiError as exc:
            if not exc.not_found:
                raise
        log.info("deleted %s and its directory (claim gone, reclaim policy Delete)", name)
        return None
