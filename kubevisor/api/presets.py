"""VirtualMachineInstancePresets: apply matching presets to a VMI at creation (KubeVirt semantics).

As KubeVirt's VMI mutating webhook (`mutators/preset.go`): presets of the VMI's namespace whose
`spec.selector` matches the VMI's labels are merged into `spec.domain`, for these settings only:
resources.requests (only when the VMI has none), cpu, firmware, clock, features, devices.watchdog,
ioThreadsPolicy. A setting the VMI already has wins; two matching presets that disagree reject the
VMI. An applied preset is recorded as annotation `virtualmachinepreset.kubevirt.io/<name>: kubevirt.io/v1`.
A VMI annotated `virtualmachineinstancepresets.admission.kubevirt.io/exclude: "true"` is left alone.
Apply presets before `default_vmi` (KubeVirt does the same in its mutator).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from kubevisor.api.errors import Cause, ValidationError
from kubevisor.api.quantity import QuantityError, to_quantity
from kubevisor.api.selectors import SelectorError, selector_matches

EXCLUDE_ANNOTATION = "virtualmachineinstancepresets.admission.kubevirt.io/exclude"
APPLIED_ANNOTATION_PREFIX = "virtualmachinepreset.kubevirt.io/"
_WHOLE_SETTINGS = ("cpu", "firmware", "features", "ioThreadsPolicy")


def matching_presets(vmi: Mapping[str, Any], presets: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Presets (already limited to the VMI's namespace) whose selector matches the VMI's labels."""
    labels = (vmi.get("metadata") or {}).get("labels") or {}
    namespace = (vmi.get("metadata") or {}).get("namespace")
    out = []
    for preset in presets:
        pmeta = preset.get("metadata") or {}
        if namespace and pmeta.get("namespace") and pmeta["namespace"] != namespace:
            continue
        try:
            if selector_matches((preset.get("spec") or {}).get("selector"), labels):
                out.append(preset)
        except SelectorError:
            continue  # an invalid selector matches nothing (its admission should have refused it)
    return out


def apply_presets(
    vmi: Mapping[str, Any], presets: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """A copy of `vmi` with matching presets merged, and warnings for settings that were not applied.

    Raises ValidationError when two matching presets conflict (KubeVirt rejects such a VMI).
    """
    result: dict[str, Any] = copy.deepcopy(dict(vmi))
    meta = result.setdefault("metadata", {})
    if (meta.get("annotations") or {}).get(EXCLUDE_ANNOTATION) == "true":
        return result, []
    matched = matching_presets(result, presets)
    if not matched:
        return result, []

    conflicts: list[str] = []
    for i, preset in enumerate(matched):
        for other in matched[:i]:
            for problem in _conflicts(_domain(preset), _domain(other)):
                conflicts.append(f"presets '{_name(preset)}' and '{_name(other)}' conflict: {problem}")
    if conflicts:
        raise ValidationError(
            [
                Cause(
                    "metadata.labels",
                    "VirtualMachinePresets cannot be applied due to conflicts: " + "; ".join(conflicts),
                )
            ],
            name=str(meta.get("name") or ""),
        )

    warnings: list[str] = []
    domain = result.setdefault("spec", {}).setdefault("domain", {})
    for preset in matched:
        preset_domain = _domain(preset)
        problems = _conflicts(preset_domain, domain)
        applied = _merge(preset_domain, domain)
        if applied:
            if problems:
                warnings.append(
                    f"Some settings were not applied for VirtualMachineInstancePreset '{_name(preset)}': "
                    + "; ".join(problems)
                )
            meta.setdefault("annotations", {})[APPLIED_ANNOTATION_PREFIX + _name(preset)] = "kubevirt.io/v1"
        else:
            warnings.append(
                f"Unable to apply VirtualMachineInstancePreset '{_name(preset)}': " + "; ".join(problems)
            )
    return result, warnings


def _name(preset: Mapping[str, Any]) -> str:
    return str((preset.get("metadata") or {}).get("name") or "")


def _domain(preset: Mapping[str, Any]) -> dict[str, Any]:
    return dict((preset.get("spec") or {}).get("domain") or {})


def _same_quantity(a: object, b: object) -> bool:
    try:
        return to_quantity(a) == to_quantity(b)
    except QuantityError:
        return a == b


def _conflicts(preset: Mapping[str, Any], vmi: Mapping[str, Any]) -> list[str]:
    problems = []
    p_req = (preset.get("resources") or {}).get("requests") or {}
    v_req = (vmi.get("resources") or {}).get("requests") or {}
    for key, value in p_req.items():
        if key in v_req and not _same_quantity(value, v_req[key]):
            problems.append(f"spec.resources.requests[{key}]: {value} != {v_req[key]}")
    for key in _WHOLE_SETTINGS:
        if preset.get(key) is not None and vmi.get(key) is not None and preset[key] != vmi[key]:
            problems.append(f"spec.{key}: {preset[key]} != {vmi[key]}")
    p_clock, v_clock = preset.get("clock"), vmi.get("clock")
    if isinstance(p_clock, Mapping) and isinstance(v_clock, Mapping):
        p_off = {k: v for k, v in p_clock.items() if k != "timer"}
        v_off = {k: v for k, v in v_clock.items() if k != "timer"}
        if p_off != v_off:
            problems.append(f"spec.clock.clockoffset: {p_off} != {v_off}")
        if (
            p_clock.get("timer") is not None
            and v_clock.get("timer") is not None
            and p_clock["timer"] != v_clock["timer"]
        ):
            problems.append(f"spec.clock.timer: {p_clock['timer']} != {v_clock['timer']}")
    p_wd = (preset.get("devices") or {}).get("watchdog")
    v_wd = (vmi.get("devices") or {}).get("watchdog")
    if p_wd is not None and v_wd is not None and p_wd != v_wd:
        problems.append(f"spec.devices.watchdog: {p_wd} != {v_wd}")
    return problems


def _merge(preset: Mapping[str, Any], domain: dict[str, Any]) -> bool:
    """Merge like KubeVirt's mergeDomainSpec; True when the VMI ends up with a preset setting."""
    applied = False
    p_req = (preset.get("resources") or {}).get("requests") or {}
    if p_req:
        resources = domain.setdefault("resources", {})
        if not resources.get("requests"):
            resources["requests"] = copy.deepcopy(dict(p_req))
        v_req = resources["requests"]
        if set(v_req) == set(p_req) and all(_same_quantity(p_req[k], v_req[k]) for k in p_req):
            applied = True
    for key in _WHOLE_SETTINGS:
        if preset.get(key) is not None:
            if domain.get(key) is None:
                domain[key] = copy.deepcopy(preset[key])
            applied = applied or domain[key] == preset[key]
    p_clock = preset.get("clock")
    if isinstance(p_clock, Mapping):
        if domain.get("clock") is None:
            domain["clock"] = {k: copy.deepcopy(v) for k, v in p_clock.items() if k != "timer"}
        clock = domain["clock"]
        if p_clock.get("timer") is not None and clock.get("timer") is None:
            clock["timer"] = copy.deepcopy(p_clock["timer"])
        applied = applied or clock == p_clock
    p_wd = (preset.get("devices") or {}).get("watchdog")
    if p_wd is not None:
        devices = domain.setdefault("devices", {})
        if devices.get("watchdog") is None:
            devices["watchdog"] = copy.deepcopy(p_wd)
        applied = applied or devices["watchdog"] == p_wd
    return applied
