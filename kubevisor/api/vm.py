"""VirtualMachine (`kubevirt.io/v1`) admission: defaults, validation, run strategy.

A VM wraps a VMI template (`spec.template`) with a run strategy. Validation follows KubeVirt's
`vms-admitter.go`: the template spec is validated as a VMI spec at `spec.template.spec`, and
`running` / `runStrategy` are mutually exclusive, one of them required.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kubevisor.api.errors import FIELD_VALUE_INVALID, FIELD_VALUE_REQUIRED, Cause, ValidationError
from kubevisor.api.vmi import (
    API_VERSIONS,
    DEFAULT_MACHINE_TYPE,
    GROUP,
    firmware_serial,
    firmware_uuid,
    object_meta_causes,
    type_meta_causes,
    unknown_field_causes,
    validate_vmi_spec,
)

KIND = "VirtualMachine"
RUN_STRATEGIES = ("Always", "RerunOnFailure", "Once", "Manual", "Halted")
RUN_STRATEGY_WAIT_AS_RECEIVER = "WaitAsReceiver"  # needs KubeVirt's DecentralizedLiveMigration gate


def run_strategy(vm: Mapping[str, Any]) -> str:
    """The effective run strategy: `running: true` is Always, `false` (or nothing) is Halted."""
    spec = vm.get("spec") or {}
    if spec.get("runStrategy"):
        return str(spec["runStrategy"])
    return "Always" if spec.get("running") is True else "Halted"


def default_vm(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A defaulted deep copy of a VM manifest, as KubeVirt's VM mutating webhook leaves it.

    Only the machine type and the firmware identity (uuid, serial) go into the template: the
    other VMI defaults (cpu topology, memory.guest, disks, interfaces, …) are applied to the VMI
    when it is created from the template, after an instancetype/preference has been expanded —
    defaulting them here would make every instancetype conflict with the template.
    """
    vm: dict[str, Any] = copy.deepcopy(dict(obj))
    vm.setdefault("apiVersion", "kubevirt.io/v1")
    vm.setdefault("kind", KIND)
    meta = vm.setdefault("metadata", {})
    name = meta.get("name") if isinstance(meta, dict) else None
    spec = vm.setdefault("spec", {})
    template = spec.get("template") if isinstance(spec, dict) else None
    if not isinstance(template, dict):
        return vm
    if template.get("metadata") is None:
        template["metadata"] = {}
    if template.get("spec") is None:
        template["spec"] = {}
    tspec = template["spec"]
    domain = tspec.get("domain") if isinstance(tspec, dict) else None
    if not isinstance(domain, dict):
        return vm
    if domain.get("machine") is None:
        domain["machine"] = {}
    machine = domain["machine"]
    prefers_machine = isinstance(spec.get("preference"), dict)  # a preference may choose it
    if isinstance(machine, dict) and not machine.get("type") and not prefers_machine:
        machine["type"] = DEFAULT_MACHINE_TYPE
    if isinstance(machine, dict) and not machine:
        domain.pop("machine")
    if domain.get("firmware") is None:
        domain["firmware"] = {}
    firmware = domain["firmware"]
    if isinstance(firmware, dict) and isinstance(name, str) and name:
        firmware.setdefault("uuid", firmware_uuid(name))
        firmware.setdefault("serial", firmware_serial(name))
    if isinstance(firmware, dict) and not firmware:
        domain.pop("firmware")
    return vm


def validate_vm(obj: Mapping[str, Any], *, feature_gates: frozenset[str] = frozenset()) -> None:
    """Raise ValidationError with every problem of a VM manifest."""
    causes = vm_causes(obj, feature_gates=feature_gates)
    if causes:
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        name = str(meta.get("name") or "") if isinstance(meta, Mapping) else ""
        raise ValidationError(causes, kind=KIND, group=GROUP, name=name)


def vm_causes(obj: Mapping[str, Any], *, feature_gates: frozenset[str] = frozenset()) -> list[Cause]:
    if not isinstance(obj, Mapping):
        return [Cause("", "a VirtualMachine must be a mapping")]
    causes: list[Cause] = []
    causes += type_meta_causes(obj, KIND, API_VERSIONS)
    causes += object_meta_causes(obj.get("metadata"), "metadata")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        causes.append(Cause("spec", "spec is a required field", FIELD_VALUE_REQUIRED))
        return causes
    causes += unknown_field_causes(obj, KIND)
    causes += run_strategy_causes(spec, "spec", feature_gates=feature_gates)
    template = spec.get("template")
    if not isinstance(template, Mapping):
        causes.append(Cause("spec.template", "missing virtual machine template.", FIELD_VALUE_REQUIRED))
        return causes
    tmeta = template.get("metadata")
    if tmeta is not None:
        causes += _template_meta_causes(tmeta, "spec.template.metadata")
    tspec = template.get("spec")
    if not isinstance(tspec, Mapping):
        causes.append(
            Cause("spec.template.spec", "spec.template.spec is a required field", FIELD_VALUE_REQUIRED)
        )
        return causes
    # With an instancetype, memory comes from it: a template without memory is fine.
    causes += validate_vmi_spec(tspec, "spec.template.spec", require_memory=not spec.get("instancetype"))
    for key in ("instancetype", "preference"):
        matcher = spec.get(key)
        if matcher is not None and (not isinstance(matcher, Mapping) or not matcher.get("name")):
            if isinstance(matcher, Mapping) and matcher.get("inferFromVolume"):
                continue
            causes.append(
                Cause(f"spec.{key}.name", f"spec.{key}.name is a required field", FIELD_VALUE_REQUIRED)
            )
    return causes


def run_strategy_causes(
    spec: Mapping[str, Any], path: str, *, feature_gates: frozenset[str] = frozenset()
) -> list[Cause]:
    causes: list[Cause] = []
    running, strategy = spec.get("running"), spec.get("runStrategy")
    if running is not None and strategy is not None:
        causes.append(
            Cause(
                f"{path}.running",
                "Running and RunStrategy are mutually exclusive. "
                "Note that Running is deprecated, please use RunStrategy instead",
            )
        )
    if running is None and strategy is None:
        causes.append(Cause(f"{path}.running", "RunStrategy must be specified", FIELD_VALUE_INVALID))
    if running is not None and not isinstance(running, bool):
        causes.append(Cause(f"{path}.running", f"{path}.running must be a boolean, got {running!r}"))
    if strategy is not None:
        if strategy == RUN_STRATEGY_WAIT_AS_RECEIVER:
            if "DecentralizedLiveMigration" not in feature_gates:
                causes.append(
                    Cause(
                        f"{path}.runStrategy",
                        f"Invalid RunStrategy ({strategy}), DecentralizedLiveMigration feature gate is not "
                        "enabled in kubevirt resource",
                    )
                )
        elif strategy not in RUN_STRATEGIES:
            causes.append(Cause(f"{path}.runStrategy", f"Invalid RunStrategy ({strategy})"))
    return causes


def _template_meta_causes(meta: object, path: str) -> list[Cause]:
    if not isinstance(meta, Mapping):
        return [Cause(path, f"{path} must be an object")]
    causes = []
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and (
            not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values())
        ):
            causes.append(Cause(f"{path}.{key}", f"{key} must be a map of strings"))
    # The template's name is ignored by KubeVirt (the VMI takes the VM's name); nothing to check.
    return causes


def vmi_from_vm(
    vm: Mapping[str, Any],
    *,
    instancetype: Mapping[str, Any] | None = None,
    preference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The VMI a VM's controller creates: template + the VM's name/namespace + ownerReference.

    With `instancetype`/`preference` (the objects the VM's matchers refer to), they are expanded
    into the template first (ValidationError on conflicts). Apply `default_vmi` to the result.
    """
    if instancetype is not None or preference is not None:
        from kubevisor.api.instancetype import expand_vm

        vm = expand_vm(vm, instancetype=instancetype, preference=preference)
    meta = vm.get("metadata") or {}
    template = copy.deepcopy((vm.get("spec") or {}).get("template") or {})
    tmeta = template.get("metadata") or {}
    vmi_meta: dict[str, Any] = {"name": meta.get("name")}
    if meta.get("namespace"):
        vmi_meta["namespace"] = meta["namespace"]
    if tmeta.get("labels"):
        vmi_meta["labels"] = dict(tmeta["labels"])
    if tmeta.get("annotations"):
        vmi_meta["annotations"] = dict(tmeta["annotations"])
    if meta.get("uid"):
        vmi_meta["ownerReferences"] = [
            {
                "apiVersion": "kubevirt.io/v1",
                "kind": KIND,
                "name": meta.get("name"),
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": vmi_meta,
        "spec": template.get("spec") or {},
    }
