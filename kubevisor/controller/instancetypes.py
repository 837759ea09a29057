"""A VM's instancetype and preference, looked up and expanded into the VMI it starts (KubeVirt's VM
controller does the same when it creates the VMI).

`spec.instancetype` / `spec.preference` name a namespaced (VirtualMachineInstancetype,
VirtualMachinePreference, in the VM's namespace) or cluster-wide object (the default kind). The
VMI gets the expanded template (cpu, memory, ... from the instancetype; preferred devices and
firmware from the preference) and KubeVirt's annotations naming what was applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubevisor.api.errors import ValidationError
from kubevisor.api.instancetype import (
    API_VERSION,
    GROUP,
    INSTANCETYPE_KINDS,
    PREFERENCE_KINDS,
    expand_vm,
    matcher_kind,
)
from kubevisor.api.kinds import BY_KIND
from kubevisor.controller.kube import ApiError, Kube, Obj, Resource

_VERSION = API_VERSION.split("/", 1)[1]
RESOURCES = {
    kind: Resource(GROUP, _VERSION, BY_KIND[kind].plural, kind, namespaced=BY_KIND[kind].namespaced,
                   status_subresource=False)
    for kind in (*INSTANCETYPE_KINDS, *PREFERENCE_KINDS)
}
# KubeVirt's annotations on a VMI started with an instancetype / a preference.
ANNOTATIONS = {
    "VirtualMachineInstancetype": "kubevirt.io/instancetype-name",
    "VirtualMachineClusterInstancetype": "kubevirt.io/cluster-instancetype-name",
    "VirtualMachinePreference": "kubevirt.io/preference-name",
    "VirtualMachineClusterPreference": "kubevirt.io/cluster-preference-name",
}


class ExpandError(Exception):
    """The VM's instancetype/preference cannot be applied; the message says why (for FailedCreate)."""


def _lookup(kube: Kube, vm: Obj, key: str) -> tuple[str, Obj] | None:
    matcher = (vm.get("spec") or {}).get(key)
    if not isinstance(matcher, Mapping) or not matcher.get("name"):
        return None
    try:
        kind = matcher_kind(matcher, preference=key == "preference")
    except ValueError as exc:
        raise ExpandError(f"spec.{key}.kind: {exc}") from None
    resource = RESOURCES[kind]
    namespace = (vm.get("metadata") or {}).get("namespace") if resource.namespaced else None
    name = str(matcher["name"])
    try:
        return kind, kube.get(resource, namespace, name)
    except ApiError as exc:
        if exc.not_found:
            where = f"{namespace}/{name}" if namespace else name
            raise ExpandError(f"{kind} {where} not found") from None
        raise


def expand_for_start(kube: Kube, vm: Obj) -> Obj:
    """The VM as it starts: its template expanded with its instancetype and preference (if any)."""
    instancetype = _lookup(kube, vm, "instancetype")
    preference = _lookup(kube, vm, "preference")
    if instancetype is None and preference is None:
        return vm
    try:
        expanded = expand_vm(
            vm,
            instancetype=instancetype[1] if instancetype else None,
            preference=preference[1] if preference else None,
        )
    except ValidationError as exc:
        raise ExpandError(str(exc)) from None
    template: dict[str, Any] = expanded["spec"]["template"]
    annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
    for found in (instancetype, preference):
        if found is not None:
            annotations[ANNOTATIONS[found[0]]] = str(found[1]["metadata"]["name"])
    return expanded
