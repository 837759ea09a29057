"""In-process admission for the kubevirt.io kinds (what KubeVirt's virt-api webhooks do).

`admit(operation, obj, old, presets=...)` is pure: it returns the object to store (defaulted,
presets applied on VMI creation) plus warnings, or raises ValidationError (a 422 with causes).
`register(registry)` plugs it into Kubevisor's apiserver as mutating + validating hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kubevisor.api.errors import FIELD_VALUE_INVALID, FIELD_VALUE_REQUIRED, Cause, ValidationError
from kubevisor.api.instancetype import validate_instancetype, validate_preference
from kubevisor.api.kinds import INSTANCETYPE_GROUP, KUBEVIRT_GROUP
from kubevisor.api.presets import apply_presets
from kubevisor.api.selectors import SelectorError, selector_matches
from kubevisor.api.vm import default_vm, validate_vm
from kubevisor.api.vmi import (
    API_VERSIONS,
    DEFAULT_MACHINE_TYPE,
    default_vmi,
    object_meta_causes,
    type_meta_causes,
    unknown_field_causes,
    validate_vmi,
    validate_vmi_spec,
)

if TYPE_CHECKING:
    from kubevisor.apiserver.extensions import AdmissionRequest
    from kubevisor.apiserver.registry import Registry

Obj = dict[str, Any]
VMI_UPDATE_RESTRICTED = "update of VMI object is restricted"


def admit(
    operation: str,
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
    *,
    presets: Iterable[Mapping[str, Any]] = (),
    privileged: bool = False,
) -> tuple[Obj, list[str]]:
    """Default and validate a kubevirt.io / instancetype.kubevirt.io object for CREATE or UPDATE.

    `privileged` (Kubevisor's own components) may change a VMI's spec, as KubeVirt's service
    accounts may; users may not.
    """
    kind = str(obj.get("kind") or "")
    warnings: list[str] = []
    out: Obj = dict(obj)
    if kind == "VirtualMachineInstance":
        if operation == "CREATE":
            out, warnings = apply_presets(out, presets)
            out = default_vmi(out)
            validate_vmi(out)
        elif (
            operation == "UPDATE"
            and old is not None
            and not privileged
            and out.get("spec") != old.get("spec")
        ):
            # KubeVirt: the spec of a VMI is immutable for users (status/metadata may change).
            name = str((out.get("metadata") or {}).get("name") or "")
            raise ValidationError([Cause("spec", VMI_UPDATE_RESTRICTED)], name=name)
    elif kind == "VirtualMachine":
        out = default_vm(out)
        validate_vm(out)
        if (out.get("spec") or {}).get("running") is not None:
            warnings.append("spec.running is deprecated, please use spec.runStrategy instead.")
    elif kind == "VirtualMachineInstanceReplicaSet":
        out = default_vmirs(out)
        validate_vmirs(out)
    elif kind == "VirtualMachineInstanceMigration":
        validate_migration(out)
    elif kind == "VirtualMachineInstancePreset":
        validate_preset(out)
        warnings.append(
            "kubevirt.io/v1 VirtualMachineInstancePresets is now deprecated and will be removed in v2."
        )
    elif kind in ("VirtualMachineInstancetype", "VirtualMachineClusterInstancetype"):
        validate_instancetype(out)
    elif kind in ("VirtualMachinePreference", "VirtualMachineClusterPreference"):
        validate_preference(out)
    return out, warnings


def default_vmirs(obj: Mapping[str, Any]) -> Obj:
    import copy

    out: Obj = copy.deepcopy(dict(obj))
    spec = out.get("spec")
    if isinstance(spec, dict):
        if spec.get("replicas") is None:
            spec["replicas"] = 1
        # Only the machine type: the other VMI defaults (cpu topology, ...) are applied to each VMI at
        # its creation, after the presets that select it; defaulted here, every preset would conflict.
        template = spec.get("template")
        tspec = template.get("spec") if isinstance(template, dict) else None
        domain = tspec.get("domain") if isinstance(tspec, dict) else None
        if isinstance(domain, dict):
            machine = domain.setdefault("machine", {})
            if isinstance(machine, dict) and not machine.get("type"):
                machine["type"] = DEFAULT_MACHINE_TYPE
    return out


def _raise(causes: list[Cause], kind: str, obj: Mapping[str, Any], group: str = KUBEVIRT_GROUP) -> None:
    if causes:
        meta = obj.get("metadata")
        name = str(meta.get("name") or "") if isinstance(meta, Mapping) else ""
        raise ValidationError(causes, kind=kind, group=group, name=name)


def validate_vmirs(obj: Mapping[str, Any]) -> None:
    kind = "VirtualMachineInstanceReplicaSet"
    causes = type_meta_causes(obj, kind, API_VERSIONS) + object_meta_causes(obj.get("metadata"), "metadata")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        causes.append(Cause("spec", "spec is a required field", FIELD_VALUE_REQUIRED))
        return _raise(causes, kind, obj)
    causes += unknown_field_causes(obj, kind)
    replicas = spec.get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0):
        causes.append(
            Cause("spec.replicas", f"spec.replicas must be a non-negative integer, got {replicas!r}")
        )
    selector = spec.get("selector")
    template = spec.get("template")
    if not isinstance(selector, Mapping):
        causes.append(Cause("spec.selector", "spec.selector is a required field", FIELD_VALUE_REQUIRED))
    if not isinstance(template, Mapping) or not isinstance(template.get("spec"), Mapping):
        causes.append(Cause("spec.template", "missing virtual machine template.", FIELD_VALUE_REQUIRED))
        return _raise(causes, kind, obj)
    raw_meta = template.get("metadata")
    tmeta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    raw_labels = tmeta.get("labels")
    labels: Mapping[str, str] = raw_labels if isinstance(raw_labels, Mapping) else {}
    if isinstance(selector, Mapping):
        try:
            if not selector_matches(selector, labels):
                causes.append(Cause("spec.selector", "selector does not match labels."))
        except SelectorError as exc:
            causes.append(Cause("spec.selector", f"spec.selector: {exc}"))
    causes += validate_vmi_spec(template["spec"], "spec.template.spec")
    return _raise(causes, kind, obj)


def validate_migration(obj: Mapping[str, Any]) -> None:
    kind = "VirtualMachineInstanceMigration"
    causes = type_meta_causes(obj, kind, API_VERSIONS)
    meta = obj.get("metadata")
    if not (isinstance(meta, Mapping) and meta.get("generateName")):
        causes += object_meta_causes(meta, "metadata")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping) or not spec.get("vmiName"):
        causes.append(Cause("spec.vmiName", "must provide a valid vmi name", FIELD_VALUE_REQUIRED))
    else:
        causes += unknown_field_causes(obj, kind)
    return _raise(causes, kind, obj)


def validate_preset(obj: Mapping[str, Any]) -> None:
    kind = "VirtualMachineInstancePreset"
    causes = type_meta_causes(obj, kind, API_VERSIONS) + object_meta_causes(obj.get("metadata"), "metadata")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        causes.append(Cause("spec", "spec is a required field", FIELD_VALUE_REQUIRED))
        return _raise(causes, kind, obj)
    causes += unknown_field_causes(obj, kind)
    selector = spec.get("selector")
    if not isinstance(selector, Mapping):
        causes.append(Cause("spec.selector", "spec.selector is a required field", FIELD_VALUE_REQUIRED))
    else:
        try:
            selector_matches(selector, {})
        except SelectorError as exc:
            causes.append(Cause("spec.selector", f"spec.selector: {exc}", FIELD_VALUE_INVALID))
    if spec.get("domain") is not None and not isinstance(spec.get("domain"), Mapping):
        causes.append(Cause("spec.domain", "spec.domain must be an object"))
    return _raise(causes, kind, obj)


# ----------------------------------------------------------------------------------------------
# Wiring into Kubevisor's apiserver

KINDS_BY_GROUP = {
    KUBEVIRT_GROUP: (
        "VirtualMachineInstance",
        "VirtualMachine",
        "VirtualMachineInstanceReplicaSet",
        "VirtualMachineInstanceMigration",
        "VirtualMachineInstancePreset",
    ),
    INSTANCETYPE_GROUP: (
        "VirtualMachineInstancetype",
        "VirtualMachineClusterInstancetype",
        "VirtualMachinePreference",
        "VirtualMachineClusterPreference",
    ),
}
PRESETS_PREFIX = "/kubevirt.io/virtualmachineinstancepresets/"


def register(
    registry: Registry,
    *,
    list_presets: Callable[[str], list[Obj]] | None = None,
    privileged_users: tuple[str, ...] = ("system:",),
) -> None:
    """Install admission for every kubevirt.io kind in the apiserver's registry.

    `list_presets(namespace)` returns the presets of a namespace; by default they are read from
    the registry's storage. Users whose name starts with one of `privileged_users` may update a
    VMI's spec (Kubevisor's controllers and node agents should run as such users).
    """
    from kubevisor.apiserver.errors import APIError

    def presets_of(namespace: str) -> list[Obj]:
        if list_presets is not None:
            return list_presets(namespace)
        items, _ = registry.storage.scan(f"{PRESETS_PREFIX}{namespace}/")
        return [obj for _, obj in items]

    async def mutate(req: AdmissionRequest) -> Obj | None:
        if req.operation not in ("CREATE", "UPDATE") or req.subresource:
            return None
        try:
            out, _warnings = admit(
                req.operation,
                req.obj,
                req.old,
                presets=presets_of(req.namespace) if req.operation == "CREATE" else (),
                privileged=req.user.startswith(privileged_users),
            )
        except ValidationError as exc:
            status = exc.to_status()
            raise APIError(422, status["message"], "Invalid", status["details"]) from None
        return out

    for group, kinds in KINDS_BY_GROUP.items():
        for kind in kinds:
            registry.extensions.add_mutating(group, kind, mutate)


async def install_crds(registry: Registry) -> list[str]:
    """Create or update the kubevirt.io / instancetype.kubevirt.io CRDs in the registry.

    Returns the names of the CRDs written (unchanged ones are left alone). For `kubevisor up`;
    on a real cluster apply `deploy/crds/` instead.
    """
    from kubevisor.api.kinds import KINDS
    from kubevisor.apiserver.errors import APIError
    from kubevisor.apiserver.registry import WriteOptions

    crd_type = registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    if crd_type is None:
        raise RuntimeError("the apiserver does not serve apiextensions.k8s.io/v1")
    written = []
    for kind in KINDS:
        wanted = kind.crd()
        name = wanted["metadata"]["name"]
        try:
            current = registry.get(crd_type, "", name)
        except APIError as exc:
            if exc.code != 404:
                raise
            await registry.create(crd_type, "", wanted, WriteOptions(field_manager="kubevisor"))
            written.append(name)
            continue
        if current.get("spec") != wanted["spec"]:
            update = {
                **wanted,
                "metadata": {**wanted["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
            }
            await registry.update(crd_type, "", name, update, WriteOptions(field_manager="kubevisor"))
            written.append(name)
    return written
