"""Instancetypes and preferences (`instancetype.kubevirt.io/v1beta1`) expanded into a VMI spec.

Pure functions after KubeVirt's `pkg/instancetype/apply` and `pkg/instancetype/preference/apply`:
- the instancetype *sets* cpu (guest vCPUs → topology), memory, nodeSelector, schedulerName,
  ioThreadsPolicy, launchSecurity, gpus, hostDevices and annotations; a VM template that already
  sets one of those is rejected with a conflict naming the field (as KubeVirt's webhook does);
- the preference only *fills in* what the template leaves unset (disk/cdrom/lun bus, NIC model,
  machine type, firmware, autoattach devices, rng, termination grace period, subdomain, …).

Expand the raw template (before `default_vmi_spec`, which fills in cpu and buses itself).
Looking the objects up by kind/name (namespaced or cluster, revisions) is the controller's job.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from kubevisor.api.errors import FIELD_VALUE_INVALID, FIELD_VALUE_REQUIRED, Cause, ValidationError
from kubevisor.api.quantity import Quantity, QuantityError, to_quantity
from kubevisor.api.vmi import object_meta_causes

GROUP = "instancetype.kubevirt.io"
API_VERSION = f"{GROUP}/v1beta1"
INSTANCETYPE_KINDS = ("VirtualMachineInstancetype", "VirtualMachineClusterInstancetype")
PREFERENCE_KINDS = ("VirtualMachinePreference", "VirtualMachineClusterPreference")
TOPOLOGIES = ("sockets", "cores", "threads", "spread", "any")
_DEPRECATED_TOPOLOGIES = {
    "preferSockets": "sockets",
    "preferCores": "cores",
    "preferThreads": "threads",
    "preferSpread": "spread",
    "preferAny": "any",
}


def _conflict(path: str) -> Cause:
    return Cause(path, f"VM field(s) {path} conflicts with selected instance type", FIELD_VALUE_INVALID)


def matcher_kind(matcher: Mapping[str, Any], *, preference: bool = False) -> str:
    """The kind a VM's `spec.instancetype`/`spec.preference` refers to (cluster-wide by default)."""
    kind = str(matcher.get("kind") or "")
    kinds = PREFERENCE_KINDS if preference else INSTANCETYPE_KINDS
    for k in kinds:
        if kind.lower() in (k.lower(), k.lower().replace("virtualmachine", "")):
            return k
    if not kind:
        return kinds[1]  # KubeVirt's default: VirtualMachineCluster{Instancetype,Preference}
    raise ValueError(f"unknown {'preference' if preference else 'instancetype'} kind {kind!r}")


def apply_to_vmi_spec(
    spec: Mapping[str, Any],
    *,
    instancetype: Mapping[str, Any] | None = None,
    preference: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    path: str = "spec.template.spec",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Expand an instancetype spec and a preference spec into a copy of a VMI spec.

    Returns (spec, metadata) — metadata gets the instancetype's/preference's annotations.
    Raises ValidationError with one cause per conflicting field.
    """
    out: dict[str, Any] = copy.deepcopy(dict(spec))
    meta: dict[str, Any] = copy.deepcopy(dict(metadata or {}))
    if instancetype:
        causes = _apply_instancetype(instancetype, preference, out, meta, path)
        if causes:
            raise ValidationError(causes, kind="VirtualMachine")
    if preference:
        _apply_preference(preference, out, meta)
    return out, meta


def expand_vm(
    vm: Mapping[str, Any],
    *,
    instancetype: Mapping[str, Any] | None = None,
    preference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The VM with its template expanded and the matchers removed (KubeVirt's `expand-spec`).

    `instancetype`/`preference` are the referenced objects (or their `spec`s).
    """
    out: dict[str, Any] = copy.deepcopy(dict(vm))
    spec = out.setdefault("spec", {})
    template = spec.setdefault("template", {})
    it_spec = _spec_of(instancetype)
    pref_spec = _spec_of(preference)
    try:
        tspec, tmeta = apply_to_vmi_spec(
            template.get("spec") or {},
            instancetype=it_spec,
            preference=pref_spec,
            metadata=template.get("metadata") or {},
        )
    except ValidationError as exc:
        raise ValidationError(
            exc.causes, kind="VirtualMachine", name=str((vm.get("metadata") or {}).get("name") or "")
        ) from None
    template["spec"] = tspec
    if tmeta:
        template["metadata"] = tmeta
    spec.pop("instancetype", None)
    spec.pop("preference", None)
    return out


def _spec_of(obj: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if obj is None:
        return None
    # A whole object (it has a `spec`; instancetype/preference specs have no such field) or a spec.
    if isinstance(obj.get("spec"), Mapping) or "kind" in obj or "apiVersion" in obj or "metadata" in obj:
        spec = obj.get("spec")
        return spec if isinstance(spec, Mapping) else {}
    return obj


def preferred_topology(preference: Mapping[str, Any] | None) -> str:
    topo = ((preference or {}).get("cpu") or {}).get("preferredCPUTopology") or "sockets"
    return _DEPRECATED_TOPOLOGIES.get(str(topo), str(topo))


def guest_topology(vcpus: int, preference: Mapping[str, Any] | None) -> dict[str, int]:
    """sockets/cores/threads for `vcpus` as the preference's preferredCPUTopology asks."""
    topo = {"sockets": 1, "cores": 1, "threads": 1}
    if vcpus == 1:
        return topo
    kind = preferred_topology(preference)
    if kind in ("sockets", "any"):
        topo["sockets"] = vcpus
    elif kind == "cores":
        topo["cores"] = vcpus
    elif kind == "threads":
        topo["threads"] = vcpus
    elif kind == "spread":
        pref = preference or {}
        spread = (pref.get("cpu") or {}).get("spreadOptions") or {}
        ratio = int(spread.get("ratio") or pref.get("preferSpreadSocketToCoreRatio") or 2)
        across = spread.get("across") or "SocketsCores"
        if across == "SocketsCores":
            topo.update(cores=ratio, sockets=vcpus // ratio)
        elif across == "CoresThreads":
            topo.update(threads=ratio, cores=vcpus // ratio)
        elif across == "SocketsCoresThreads":
            topo.update(threads=2, cores=ratio, sockets=vcpus // 2 // ratio)
    return topo


def _apply_instancetype(
    it: Mapping[str, Any],
    preference: Mapping[str, Any] | None,
    spec: dict[str, Any],
    meta: dict[str, Any],
    path: str,
) -> list[Cause]:
    causes: list[Cause] = []
    domain = spec.setdefault("domain", {})
    resources = domain.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}

    # nodeSelector / schedulerName
    if it.get("nodeSelector") is not None:
        if spec.get("nodeSelector") is not None:
            causes.append(_conflict(f"{path}.nodeSelector"))
        else:
            spec["nodeSelector"] = dict(it["nodeSelector"])
    if it.get("schedulerName"):
        if spec.get("schedulerName"):
            causes.append(_conflict(f"{path}.schedulerName"))
        else:
            spec["schedulerName"] = it["schedulerName"]

    # CPU
    it_cpu = it.get("cpu") or {}
    cpu = domain.setdefault("cpu", {})
    cpu_causes = [
        _conflict(f"{path}.domain.resources.{k}.cpu")
        for k, v in (("requests", requests), ("limits", limits))
        if "cpu" in v
    ]
    cpu_causes += [_conflict(f"{path}.domain.cpu.{k}") for k in ("sockets", "cores", "threads") if cpu.get(k)]
    for it_key, vmi_key in (
        ("model", "model"),
        ("dedicatedCPUPlacement", "dedicatedCpuPlacement"),
        ("isolateEmulatorThread", "isolateEmulatorThread"),
        ("numa", "numa"),
        ("realtime", "realtime"),
    ):
        if cpu.get(vmi_key) and it_cpu.get(it_key) is not None:
            cpu_causes.append(_conflict(f"{path}.domain.cpu.{it_key}"))
    causes += cpu_causes
    if not cpu_causes:
        for it_key, vmi_key in (
            ("model", "model"),
            ("dedicatedCPUPlacement", "dedicatedCpuPlacement"),
            ("isolateEmulatorThread", "isolateEmulatorThread"),
            ("numa", "numa"),
            ("realtime", "realtime"),
            ("maxSockets", "maxSockets"),
        ):
            if it_cpu.get(it_key) is not None:
                cpu[vmi_key] = copy.deepcopy(it_cpu[it_key])
        cpu.update(guest_topology(int(it_cpu.get("guest") or 1), preference))

    # Memory (KubeVirt reports the first memory conflict only)
    it_mem = it.get("memory") or {}
    memory = domain.setdefault("memory", {})
    mem_conflict = None
    if memory.get("guest") is not None:
        mem_conflict = f"{path}.domain.memory.guest"
    elif memory.get("hugepages") is not None and it_mem.get("hugepages") is not None:
        mem_conflict = f"{path}.domain.memory.hugepages"
    elif memory.get("maxGuest") is not None and it_mem.get("maxGuest") is not None:
        mem_conflict = f"{path}.domain.memory.maxGuest"
    elif "memory" in requests:
        mem_conflict = f"{path}.domain.resources.requests.memory"
    elif "memory" in limits:
        mem_conflict = f"{path}.domain.resources.limits.memory"
    if mem_conflict:
        causes.append(_conflict(mem_conflict))
    elif it_mem.get("guest") is not None:
        memory["guest"] = it_mem["guest"]
        overcommit = int(it_mem.get("overcommitPercent") or 0)
        if overcommit > 0:
            guest = to_quantity(it_mem["guest"])
            requested = math.floor(guest.ceil() * (100 - overcommit) / 100)
            res = domain.setdefault("resources", {})
            res.setdefault("requests", {})["memory"] = str(
                Quantity(to_quantity(requested).value, guest.format)
            )
        for key in ("hugepages", "maxGuest"):
            if it_mem.get(key) is not None:
                memory[key] = copy.deepcopy(it_mem[key])

    # Remaining instancetype settings
    if it.get("ioThreadsPolicy") is not None:
        if domain.get("ioThreadsPolicy") is not None:
            causes.append(_conflict(f"{path}.domain.ioThreadsPolicy"))
        else:
            domain["ioThreadsPolicy"] = it["ioThreadsPolicy"]
    if it.get("ioThreads") is not None:
        if domain.get("ioThreads") is not None:
            causes.append(_conflict(f"{path}.domain.ioThreads"))
        else:
            domain["ioThreads"] = copy.deepcopy(it["ioThreads"])
    if it.get("launchSecurity") is not None:
        if domain.get("launchSecurity") is not None:
            causes.append(_conflict(f"{path}.domain.launchSecurity"))
        else:
            domain["launchSecurity"] = copy.deepcopy(it["launchSecurity"])
    devices = domain.setdefault("devices", {})
    for key in ("gpus", "hostDevices"):
        if it.get(key):
            if devices.get(key):
                causes.append(_conflict(f"{path}.domain.devices.{key}"))
            else:
                devices[key] = copy.deepcopy(it[key])
    for key, value in (it.get("annotations") or {}).items():
        annotations = meta.setdefault("annotations", {})
        if key in annotations and annotations[key] != value:
            continue  # the VM's own annotation wins (KubeVirt keeps it too)
        annotations[key] = value
    for empty in ("cpu", "memory"):
        if not domain.get(empty):
            domain.pop(empty, None)
    if not devices:
        domain.pop("devices", None)
    return causes


def _apply_preference(pref: Mapping[str, Any], spec: dict[str, Any], meta: dict[str, Any]) -> None:
    domain = spec.setdefault("domain", {})
    devices_pref = pref.get("devices") or {}
    devices = domain.setdefault("devices", {})

    for pref_key, vmi_key in (
        ("preferredAutoattachGraphicsDevice", "autoattachGraphicsDevice"),
        ("preferredAutoattachMemBalloon", "autoattachMemBalloon"),
        ("preferredAutoattachPodInterface", "autoattachPodInterface"),
        ("preferredAutoattachSerialConsole", "autoattachSerialConsole"),
        ("preferredAutoattachInputDevice", "autoattachInputDevice"),
        ("preferredUseVirtioTransitional", "useVirtioTransitional"),
        ("preferredBlockMultiQueue", "blockMultiQueue"),
        ("preferredNetworkInterfaceMultiQueue", "networkInterfaceMultiqueue"),
    ):
        if devices_pref.get(pref_key) is not None and devices.get(vmi_key) is None:
            devices[vmi_key] = devices_pref[pref_key]
    if devices_pref.get("preferredDisableHotplug") is not None:
        devices["disableHotplug"] = devices_pref["preferredDisableHotplug"]
    for pref_key, vmi_key in (("preferredRng", "rng"), ("preferredTPM", "tpm")):
        if devices_pref.get(pref_key) is not None and devices.get(vmi_key) is None:
            devices[vmi_key] = copy.deepcopy(devices_pref[pref_key])

    for disk in devices.get("disks") or []:
        if not any(t in disk for t in ("disk", "cdrom", "lun")):
            disk["disk"] = {}
        if isinstance(disk.get("disk"), dict):
            target = disk["disk"]
            if devices_pref.get("preferredDiskBus") and not target.get("bus"):
                target["bus"] = devices_pref["preferredDiskBus"]
            for pref_key, key in (("preferredDiskCache", "cache"), ("preferredDiskIO", "io")):
                if devices_pref.get(pref_key) and not disk.get(key):
                    disk[key] = devices_pref[pref_key]
            if devices_pref.get("preferredDiskBlockSize") is not None and disk.get("blockSize") is None:
                disk["blockSize"] = copy.deepcopy(devices_pref["preferredDiskBlockSize"])
            if (
                devices_pref.get("preferredDiskDedicatedIoThread") is not None
                and disk.get("dedicatedIOThread") is None
                and target.get("bus") == "virtio"
            ):
                disk["dedicatedIOThread"] = devices_pref["preferredDiskDedicatedIoThread"]
        elif isinstance(disk.get("cdrom"), dict):
            if devices_pref.get("preferredCdromBus") and not disk["cdrom"].get("bus"):
                disk["cdrom"]["bus"] = devices_pref["preferredCdromBus"]
        elif (
            isinstance(disk.get("lun"), dict)
            and devices_pref.get("preferredLunBus")
            and not disk["lun"].get("bus")
        ):
            disk["lun"]["bus"] = devices_pref["preferredLunBus"]

    pod_networks = {n.get("name") for n in spec.get("networks") or [] if isinstance(n, dict) and "pod" in n}
    bindings = ("bridge", "masquerade", "sriov", "slirp", "macvtap", "passt", "passtBinding", "binding")
    for iface in devices.get("interfaces") or []:
        if devices_pref.get("preferredInterfaceModel") and not iface.get("model"):
            iface["model"] = devices_pref["preferredInterfaceModel"]
        if (
            devices_pref.get("preferredInterfaceMasquerade") is not None
            and not any(b in iface for b in bindings)
            and iface.get("name") in pod_networks
        ):
            iface["masquerade"] = copy.deepcopy(devices_pref["preferredInterfaceMasquerade"])
    for device in devices.get("inputs") or []:
        for pref_key, key in (("preferredInputBus", "bus"), ("preferredInputType", "type")):
            if devices_pref.get(pref_key) and not device.get(key):
                device[key] = devices_pref[pref_key]
    if not devices:
        domain.pop("devices")

    machine_pref = (pref.get("machine") or {}).get("preferredMachineType")
    if machine_pref:
        machine = domain.setdefault("machine", {})
        if not machine.get("type"):
            machine["type"] = machine_pref

    fw_pref = pref.get("firmware") or {}
    if fw_pref:
        firmware = domain.setdefault("firmware", {})
        bootloader = firmware.setdefault("bootloader", {})
        if fw_pref.get("preferredUseBios") and "bios" not in bootloader and "efi" not in bootloader:
            bootloader["bios"] = {}
            if fw_pref.get("preferredUseBiosSerial") is not None:
                bootloader["bios"]["useSerial"] = fw_pref["preferredUseBiosSerial"]
        if (
            (fw_pref.get("preferredUseEfi") or fw_pref.get("preferredEfi"))
            and "efi" not in bootloader
            and ("bios" not in bootloader)
        ):
            efi = copy.deepcopy(fw_pref.get("preferredEfi") or {})
            if fw_pref.get("preferredUseSecureBoot") is not None:
                efi.setdefault("secureBoot", fw_pref["preferredUseSecureBoot"])
            bootloader["efi"] = efi
        if not bootloader:
            firmware.pop("bootloader")

    cpu_pref = pref.get("cpu") or {}
    if cpu_pref.get("preferredCPUFeatures"):
        cpu = domain.setdefault("cpu", {})
        features = cpu.setdefault("features", [])
        names = {f.get("name") for f in features}
        features.extend(
            copy.deepcopy(f) for f in cpu_pref["preferredCPUFeatures"] if f.get("name") not in names
        )

    clock_pref = pref.get("clock") or {}
    if clock_pref.get("preferredClockOffset") is not None and not domain.get("clock"):
        domain["clock"] = copy.deepcopy(clock_pref["preferredClockOffset"])
    if clock_pref.get("preferredTimer") is not None:
        clock = domain.setdefault("clock", {})
        clock.setdefault("timer", copy.deepcopy(clock_pref["preferredTimer"]))

    if (
        pref.get("preferredTerminationGracePeriodSeconds") is not None
        and spec.get("terminationGracePeriodSeconds") is None
    ):
        spec["terminationGracePeriodSeconds"] = pref["preferredTerminationGracePeriodSeconds"]
    if pref.get("preferredSubdomain") and not spec.get("subdomain"):
        spec["subdomain"] = pref["preferredSubdomain"]
    if pref.get("preferredArchitecture") and not spec.get("architecture"):
        spec["architecture"] = pref["preferredArchitecture"]
    for key, value in (pref.get("annotations") or {}).items():
        meta.setdefault("annotations", {}).setdefault(key, value)


# ----------------------------------------------------------------------------------------------
# Validation of the instancetype / preference objects themselves


def validate_instancetype(obj: Mapping[str, Any]) -> None:
    kind = str(obj.get("kind") or "")
    causes: list[Cause] = []
    if obj.get("apiVersion") != API_VERSION:
        causes.append(Cause("apiVersion", f"apiVersion must be {API_VERSION}"))
    if kind not in INSTANCETYPE_KINDS:
        causes.append(Cause("kind", f"kind must be one of {', '.join(INSTANCETYPE_KINDS)}"))
    causes += object_meta_causes(obj.get("metadata"), "metadata")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        causes.append(Cause("spec", "spec is a required field", FIELD_VALUE_REQUIRED))
    else:
        guest = (spec.get("cpu") or {}).get("guest")
        if guest is None:
            causes.append(Cause("spec.cpu.guest", "spec.cpu.guest is a required field", FIELD_VALUE_REQUIRED))
        elif not isinstance(guest, int) or isinstance(guest, bool) or guest < 1:
            causes.append(Cause("spec.cpu.guest", f"spec.cpu.guest must be an integer >= 1, got {guest!r}"))
        mem = (spec.get("memory") or {}).get("guest")
        if mem is None:
            causes.append(
                Cause("spec.memory.guest", "spec.memory.guest is a required field", FIELD_VALUE_REQUIRED)
            )
        else:
            try:
                if to_quantity(mem).value <= 0:
                    causes.append(
                        Cause("spec.memory.guest", f"spec.memory.guest '{mem}' must be greater than 0")
                    )
            except QuantityError as exc:
                causes.append(Cause("spec.memory.guest", f"spec.memory.guest: Invalid value: {mem!r}: {exc}"))
        overcommit = (spec.get("memory") or {}).get("overcommitPercent")
        if overcommit is not None and (not isinstance(overcommit, int) or not 0 <= overcommit <= 100):
            causes.append(
                Cause(
                    "spec.memory.overcommitPercent", "spec.memory.overcommitPercent must be between 0 and 100"
                )
            )
    if causes:
        raise ValidationError(
            causes,
            kind=kind or "VirtualMachineInstancetype",
            group=GROUP,
            name=str((obj.get("metadata") or {}).get("name") or ""),
        )


def validate_preference(obj: Mapping[str, Any]) -> None:
    kind = str(obj.get("kind") or "")
    causes: list[Cause] = []
    if obj.get("apiVersion") != API_VERSION:
        causes.append(Cause("apiVersion", f"apiVersion must be {API_VERSION}"))
    if kind not in PREFERENCE_KINDS:
        causes.append(Cause("kind", f"kind must be one of {', '.join(PREFERENCE_KINDS)}"))
    causes += object_meta_causes(obj.get("metadata"), "metadata")
    spec = obj.get("spec") or {}
    topo = (spec.get("cpu") or {}).get("preferredCPUTopology")
    if topo is not None and topo not in TOPOLOGIES and topo not in _DEPRECATED_TOPOLOGIES:
        causes.append(
            Cause(
                "spec.cpu.preferredCPUTopology",
                f"spec.cpu.preferredCPUTopology {topo!r} is not one of {', '.join(TOPOLOGIES)}",
            )
        )
    if causes:
        raise ValidationError(
            causes,
            kind=kind or "VirtualMachinePreference",
            group=GROUP,
            name=str((obj.get("metadata") or {}).get("name") or ""),
        )
