"""VirtualMachineInstance (`kubevirt.io/v1`) admission: KubeVirt's defaults and validation.

Pure functions on plain dicts (the manifest as decoded from YAML/JSON):
- `default_vmi(obj)` returns a defaulted deep copy (what KubeVirt's mutating webhook adds).
- `validate_vmi(obj)` raises `ValidationError` with *all* causes, with KubeVirt's field paths
  and messages (`pkg/virt-api/webhooks/validating-webhook/admitters`, `pkg/network/admitter`).
`validate_vmi_spec(spec, path)` is shared with VM/VMIRS templates.
"""

from __future__ import annotations

import base64
import binascii
import copy
import fnmatch
import re
import uuid
from collections.abc import Mapping
from typing import Any

from kubevisor.api.errors import (
    FIELD_VALUE_INVALID,
    FIELD_VALUE_NOT_FOUND,
    FIELD_VALUE_NOT_SUPPORTED,
    FIELD_VALUE_REQUIRED,
    Cause,
    ValidationError,
)
from kubevisor.api.quantity import Quantity, QuantityError, to_quantity

GROUP = "kubevirt.io"
API_VERSIONS = ("kubevirt.io/v1", "kubevirt.io/v1alpha3")
KIND = "VirtualMachineInstance"

DEFAULT_MACHINE_TYPE = "q35"
# KubeVirt's default `emulatedMachines` on amd64 is q35 only; we also run the i440fx `pc` machine.
SUPPORTED_MACHINES = ("q35*", "pc-q35*", "pc", "pc-i440fx*")
DISK_BUSES = ("virtio", "sata", "scsi", "usb")
DISK_TARGETS = ("disk", "lun", "cdrom")
DEFAULT_DISK_BUS = {"disk": "virtio", "lun": "scsi", "cdrom": "sata"}
DEFAULT_TERMINATION_GRACE_PERIOD = 30
CLOUD_INIT_USER_MAX_LEN = 2048
CLOUD_INIT_NETWORK_MAX_LEN = 2048
# github.com/kubevirt/kubevirt pkg/virt-controller/watch/vm/firmware.go: uuid5 namespace for firmware UUIDs.
FIRMWARE_UUID_NAMESPACE = uuid.UUID("6a1a24a1-4061-4607-8bf4-a3963d0c5895")

VOLUME_SOURCES = (
    "containerDisk",
    "persistentVolumeClaim",
    "dataVolume",
    "cloudInitNoCloud",
    "cloudInitConfigDrive",
    "emptyDisk",
    "ephemeral",
    "hostDisk",
    "configMap",
    "secret",
    "serviceAccount",
    "downwardAPI",
    "downwardMetrics",
    "sysprep",
    "memoryDump",
    "containerPath",
)
INTERFACE_BINDINGS = ("bridge", "masquerade", "sriov", "slirp", "macvtap", "passt", "passtBinding", "binding")
NETWORK_SOURCES = ("pod", "multus", "resourceClaim")
NIC_MODELS = ("e1000", "e1000e", "igb", "ne2k_pci", "pcnet", "rtl8139", "virtio")

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IFACE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
_DISK_SERIAL = re.compile(r"^[A-Za-z0-9_.+-]+$")


# ----------------------------------------------------------------------------------------------
# Defaults


def firmware_uuid(name: str) -> str:
    """The firmware UUID KubeVirt derives from a VM's name (stable across restarts)."""
    return str(uuid.uuid5(FIRMWARE_UUID_NAMESPACE, name))


def firmware_serial(name: str) -> str:
    """A stable SMBIOS serial for a VM name (KubeVirt sets a random one once, on VM creation)."""
    return str(uuid.uuid5(FIRMWARE_UUID_NAMESPACE, f"serial/{name}"))


def default_vmi(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A defaulted deep copy of a VMI manifest; the input is not modified.

    Values of the wrong type are left as they are (never replaced), so that validation still
    reports them; defaulting itself never fails on a mapping.
    """
    vmi: dict[str, Any] = copy.deepcopy(dict(obj))
    vmi.setdefault("apiVersion", "kubevirt.io/v1")
    vmi.setdefault("kind", KIND)
    meta = _dict_at(vmi, "metadata")
    spec = _dict_at(vmi, "spec")
    name = meta.get("name") if meta is not None else None
    if spec is not None:
        default_vmi_spec(spec, name=name if isinstance(name, str) else "")
    return vmi


def default_vmi_spec(spec: dict[str, Any], *, name: str) -> None:
    """Default a VMI spec in place (also used for VM and VMIRS templates)."""
    domain = _dict_at(spec, "domain")
    if domain is None:
        return
    machine = _dict_at(domain, "machine")
    if machine is not None and not machine.get("type"):
        machine["type"] = DEFAULT_MACHINE_TYPE

    resources = _dict_at(domain, "resources") or {}
    raw_limits, raw_requests = resources.get("limits"), resources.get("requests")
    limits: dict[str, Any] = raw_limits if isinstance(raw_limits, dict) else {}
    requests: dict[str, Any] = raw_requests if isinstance(raw_requests, dict) else {}
    if "cpu" in limits and "cpu" not in requests and (raw_requests is None or raw_requests is requests):
        requests["cpu"] = limits["cpu"]
        resources["requests"] = requests
    if not resources and "resources" in domain:
        domain.pop("resources")

    memory = _dict_at(domain, "memory")
    if memory is not None:
        if "guest" not in memory:
            hugepages = memory.get("hugepages")
            if requests.get("memory") is not None and not _is_zero(requests["memory"]):
                memory["guest"] = requests["memory"]
            elif limits.get("memory") is not None and not _is_zero(limits["memory"]):
                memory["guest"] = limits["memory"]
            elif isinstance(hugepages, dict) and hugepages.get("pageSize"):
                memory["guest"] = hugepages["pageSize"]
        if not memory:
            domain.pop("memory")

    cpu = _dict_at(domain, "cpu")
    if cpu is not None:
        _default_cpu(cpu, limits, requests)

    firmware = _dict_at(domain, "firmware")
    if firmware is not None:
        if name:
            # KubeVirt gives a VM a firmware UUID (legacy: uuid5 of the name) and a serial; deriving
            # both from the name keeps them stable across restarts without storing anything.
            firmware.setdefault("uuid", firmware_uuid(name))
            firmware.setdefault("serial", firmware_serial(name))
        if not firmware:
            domain.pop("firmware")

    devices = _dict_at(domain, "devices")
    if devices is not None:
        devices.setdefault("autoattachSerialConsole", True)
        devices.setdefault("autoattachGraphicsDevice", True)
        devices.setdefault("autoattachPodInterface", True)
        _default_network(spec, devices)
        _default_disks(spec, devices)

    volumes = spec.get("volumes")
    for volume in volumes if isinstance(volumes, list) else []:
        container_disk = volume.get("containerDisk") if isinstance(volume, dict) else None
        if isinstance(container_disk, dict) and not container_disk.get("imagePullPolicy"):
            image = str(container_disk.get("image", ""))
            latest = image.endswith(":latest") or not any(c in image for c in ":@")
            container_disk["imagePullPolicy"] = "Always" if latest else "IfNotPresent"

    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_PERIOD)


def _default_cpu(cpu: dict[str, Any], limits: Mapping[str, Any], requests: Mapping[str, Any]) -> None:
    counts = {k: cpu.get(k) for k in ("sockets", "cores", "threads")}
    if not any(counts.values()):
        # As KubeVirt: with no topology, the CPU limit (else request), rounded up, becomes sockets.
        sockets = 1
        for source in (limits, requests):
            if "cpu" in source:
                try:
                    sockets = max(1, to_quantity(source["cpu"]).ceil())
                except QuantityError:
                    pass
                break
        cpu.update(sockets=sockets, cores=1, threads=1)
    else:
        for key, value in counts.items():
            if value is None or value == 0:  # 0 means unset in KubeVirt; other junk is left for validation
                cpu[key] = 1


def _default_network(spec: dict[str, Any], devices: dict[str, Any]) -> None:
    # KubeVirt's default binding is `bridge` (cluster config); Kubevisor's is masquerade on the pod
    # network: it keeps the pod IP on the pod and works without a DHCP server in the launcher.
    if (
        devices.get("interfaces") is not None
        or spec.get("networks") is not None
        or devices.get("autoattachPodInterface") is False
    ):
        return
    devices["interfaces"] = [{"name": "default", "masquerade": {}}]
    spec["networks"] = [{"name": "default", "pod": {}}]


def _default_disks(spec: dict[str, Any], devices: dict[str, Any]) -> None:
    disks = devices.setdefault("disks", [])
    if not isinstance(disks, list):
        return
    filesystems = devices.get("filesystems")
    named = {_name(d) for d in disks}
    named |= {_name(f) for f in (filesystems if isinstance(filesystems, list) else [])}
    volumes = spec.get("volumes")
    for volume in volumes if isinstance(volumes, list) else []:
        vol_name = _name(volume)
        if vol_name is not None and vol_name not in named:
            disks.append({"name": vol_name})  # KubeVirt: every volume gets a disk
            named.add(vol_name)
    for disk in disks:
        if not isinstance(disk, dict):
            continue
        target = next((t for t in DISK_TARGETS if disk.get(t) is not None), None)
        if target is None:
            for t in DISK_TARGETS:
                disk.pop(t, None)  # `disk:` with no value is "not set", as in KubeVirt's decoding
            target = "disk"
            disk["disk"] = {}
        device = disk[target]
        if isinstance(device, dict):
            device.setdefault("bus", DEFAULT_DISK_BUS[target])
            if target == "cdrom":
                device.setdefault("readonly", True)
                device.setdefault("tray", "closed")
    if not disks:
        devices.pop("disks")


def _name(item: object) -> str | None:
    """The `name` of a list item, when it is a string."""
    if isinstance(item, Mapping):
        name = item.get("name")
        if isinstance(name, str):
            return name
    return None


def _dict_at(parent: dict[str, Any], key: str) -> dict[str, Any] | None:
    """parent[key] as a dict, created when absent (or null); None when it holds something else."""
    value = parent.get(key)
    if value is None:
        value = {}
        parent[key] = value
    return value if isinstance(value, dict) else None


def _is_zero(raw: object) -> bool:
    try:
        return to_quantity(raw).is_zero()
    except QuantityError:
        return False


# ----------------------------------------------------------------------------------------------
# Validation


def validate_vmi(obj: Mapping[str, Any]) -> None:
    """Raise ValidationError listing every problem of a VMI manifest; return None if valid."""
    causes = vmi_causes(obj)
    if causes:
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        name = str(meta.get("name") or "") if isinstance(meta, Mapping) else ""
        raise ValidationError(causes, kind=KIND, group=GROUP, name=name)


def vmi_causes(obj: Mapping[str, Any]) -> list[Cause]:
    if not isinstance(obj, Mapping):
        return [Cause("", "a VirtualMachineInstance must be a mapping")]
    causes: list[Cause] = []
    causes += type_meta_causes(obj, KIND, API_VERSIONS)
    causes += object_meta_causes(obj.get("metadata"), "metadata")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        causes.append(Cause("spec", "spec is a required field", FIELD_VALUE_REQUIRED))
        return causes
    causes += unknown_field_causes(obj, "VirtualMachineInstance")
    causes += validate_vmi_spec(spec, "spec", require_memory=True)
    return causes


def type_meta_causes(obj: Mapping[str, Any], kind: str, api_versions: tuple[str, ...]) -> list[Cause]:
    causes = []
    if obj.get("apiVersion") not in api_versions:
        causes.append(
            Cause(
                "apiVersion",
                f"apiVersion {obj.get('apiVersion')!r} is not supported, must be one of {list(api_versions)}",
                FIELD_VALUE_NOT_SUPPORTED,
            )
        )
    if obj.get("kind") != kind:
        causes.append(Cause("kind", f"kind {obj.get('kind')!r} is not {kind}", FIELD_VALUE_INVALID))
    return causes


def object_meta_causes(meta: object, path: str, *, label_name: bool = False) -> list[Cause]:
    """Kubernetes' name rules: a DNS-1123 subdomain (a label when `label_name`)."""
    if not isinstance(meta, Mapping):
        return [Cause(f"{path}.name", "name or generateName is required", FIELD_VALUE_REQUIRED)]
    causes: list[Cause] = []
    name = meta.get("name")
    if name in (None, ""):
        if not meta.get("generateName"):
            causes.append(Cause(f"{path}.name", "name or generateName is required", FIELD_VALUE_REQUIRED))
    elif not isinstance(name, str):
        causes.append(Cause(f"{path}.name", "name must be a string"))
    else:
        msg = dns1123_label_error(name) if label_name else dns1123_subdomain_error(name)
        if msg:
            causes.append(Cause(f"{path}.name", f"Invalid value: {name!r}: {msg}"))
    namespace = meta.get("namespace")
    if namespace not in (None, "") and (not isinstance(namespace, str) or dns1123_label_error(namespace)):
        causes.append(
            Cause(f"{path}.namespace", f"Invalid value: {namespace!r}: {dns1123_label_error(str(namespace))}")
        )
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and (
            not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values())
        ):
            causes.append(Cause(f"{path}.{key}", f"{key} must be a map of strings"))
    return causes


def dns1123_label_error(value: str) -> str:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _DNS1123_LABEL.match(value):
        return (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character"
        )
    return ""


def dns1123_subdomain_error(value: str) -> str:
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.match(value):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
            "or '.', and must start and end with an alphanumeric character"
        )
    return ""


def unknown_field_causes(obj: Mapping[str, Any], kind: str) -> list[Cause]:
    from kubevisor.api.schema import unknown_fields  # schema imports constants from here

    return [
        Cause(path, f'unknown field "{path}"', FIELD_VALUE_NOT_SUPPORTED)
        for path in unknown_fields(obj, kind)
    ]


def validate_vmi_spec(spec: Mapping[str, Any], path: str, *, require_memory: bool = True) -> list[Cause]:
    """Causes for a VMI spec at `path` (`spec`, or `spec.template.spec` inside a VM)."""
    causes: list[Cause] = []
    domain = spec.get("domain")
    if not isinstance(domain, Mapping):
        return [Cause(f"{path}.domain", f"{path}.domain is a required field", FIELD_VALUE_REQUIRED)]
    devices = domain.get("devices") or {}
    if not isinstance(devices, Mapping):
        causes.append(Cause(f"{path}.domain.devices", "devices must be an object"))
        devices = {}
    volumes = _list_of_dicts(spec.get("volumes"), f"{path}.volumes", causes)
    disks = _list_of_dicts(devices.get("disks"), f"{path}.domain.devices.disks", causes)
    interfaces = _list_of_dicts(devices.get("interfaces"), f"{path}.domain.devices.interfaces", causes)
    networks = _list_of_dicts(spec.get("networks"), f"{path}.networks", causes)

    causes += _resource_causes(domain, path, require_memory=require_memory)
    causes += _cpu_causes(domain, path)
    causes += _machine_causes(domain, path)
    causes += _firmware_causes(domain, path)
    causes += _disk_causes(disks, volumes, path)
    causes += _volume_causes(volumes, path)
    causes += _network_causes(interfaces, networks, path)
    causes += _boot_order_causes(disks, interfaces, path)

    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or grace < 0):
        causes.append(
            Cause(
                f"{path}.terminationGracePeriodSeconds",
                f"{path}.terminationGracePeriodSeconds must be a non-negative integer, got {grace!r}",
            )
        )
    hostname = spec.get("hostname")
    if hostname is not None and (not isinstance(hostname, str) or dns1123_label_error(hostname)):
        causes.append(
            Cause(
                f"{path}.hostname",
                f"{path}.hostname does not conform to the kubernetes DNS_LABEL rules : "
                f"{dns1123_label_error(str(hostname))}",
            )
        )
    subdomain = spec.get("subdomain")
    if subdomain is not None and (not isinstance(subdomain, str) or dns1123_subdomain_error(subdomain)):
        causes.append(
            Cause(
                f"{path}.subdomain",
                f"{path}.subdomain does not conform to the kubernetes DNS_SUBDOMAIN rules : "
                f"{dns1123_subdomain_error(str(subdomain))}",
            )
        )
    return causes


def _required_name(item: Mapping[str, Any], here: str, causes: list[Cause]) -> str | None:
    name = item.get("name")
    if name is None or name == "":
        causes.append(Cause(f"{here}.name", f"{here}.name is a required field", FIELD_VALUE_REQUIRED))
        return None
    if not isinstance(name, str):
        causes.append(Cause(f"{here}.name", f"{here}.name must be a string, got {name!r}"))
        return None
    return name


def _list_of_dicts(raw: object, path: str, causes: list[Cause]) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        causes.append(Cause(path, f"{path} must be a list"))
        return []
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            out.append(item)
        else:
            causes.append(Cause(f"{path}[{i}]", f"{path}[{i}] must be an object"))
            out.append({})
    return out


def _quantity(raw: object, field: str, causes: list[Cause]) -> Quantity | None:
    if raw is None:
        return None
    try:
        return to_quantity(raw)
    except QuantityError as exc:
        causes.append(Cause(field, f"{field}: Invalid value: {raw!r}: {exc}"))
        return None


def _resource_causes(domain: Mapping[str, Any], path: str, *, require_memory: bool) -> list[Cause]:
    causes: list[Cause] = []
    resources = domain.get("resources") or {}
    memory = domain.get("memory") or {}
    if not isinstance(resources, Mapping) or not isinstance(memory, Mapping):
        return [Cause(f"{path}.domain.resources", "resources and memory must be objects")]
    quantities: dict[str, dict[str, Quantity | None]] = {}
    for kind in ("requests", "limits"):
        values = resources.get(kind) or {}
        if not isinstance(values, Mapping):
            causes.append(Cause(f"{path}.domain.resources.{kind}", f"{kind} must be a map"))
            values = {}
        quantities[kind] = {
            str(res): _quantity(raw, f"{path}.domain.resources.{kind}.{res}", causes)
            for res, raw in values.items()
        }
    guest = _quantity(memory.get("guest"), f"{path}.domain.memory.guest", causes)
    req_mem = quantities["requests"].get("memory")
    lim_mem = quantities["limits"].get("memory")
    req_f, lim_f = f"{path}.domain.resources.requests.memory", f"{path}.domain.resources.limits.memory"

    for kind in ("requests", "limits"):
        for res, q in quantities[kind].items():
            field = f"{path}.domain.resources.{kind}.{res}"
            if q is not None and q.value < 0:
                causes.append(Cause(field, f"{field} '{q}': must be greater than or equal to 0."))
    if req_mem is not None and lim_mem is not None and lim_mem.value >= 0 and req_mem > lim_mem:
        causes.append(Cause(req_f, f"{req_f} '{req_mem}' is greater than {lim_f} '{lim_mem}'"))
    if req_mem is not None and 0 <= req_mem.value < 1_000_000:
        causes.append(Cause(req_f, f"{req_f} '{req_mem}': must be greater than or equal to 1M."))
    guest_f = f"{path}.domain.memory.guest"
    if guest is not None and guest.value < 1_000_000:
        causes.append(Cause(guest_f, f"{guest_f} '{guest}': must be greater than or equal to 1M."))
    if guest is not None and lim_mem is not None and guest > lim_mem:
        causes.append(
            Cause(
                guest_f,
                f"{guest_f} '{guest}' must be equal to or less than the memory limit {lim_f} '{lim_mem}'",
            )
        )
    req_cpu, lim_cpu = quantities["requests"].get("cpu"), quantities["limits"].get("cpu")
    if req_cpu is not None and lim_cpu is not None and req_cpu > lim_cpu:
        f_req, f_lim = f"{path}.domain.resources.requests.cpu", f"{path}.domain.resources.limits.cpu"
        causes.append(Cause(f_req, f"{f_req} '{req_cpu}' is greater than {f_lim} '{lim_cpu}'"))

    has_memory = (req_mem is not None and not req_mem.is_zero()) or "guest" in memory or "hugepages" in memory
    if require_memory and not has_memory and not any(c.field in (req_f, guest_f) for c in causes):
        causes.append(
            Cause(
                req_f,
                f"no memory requested, at least one of '{path}.domain.memory.guest', "
                f"'{path}.domain.memory.hugepages.pageSize' or '{req_f}' must be set",
                FIELD_VALUE_REQUIRED,
            )
        )
    return causes


def _cpu_causes(domain: Mapping[str, Any], path: str) -> list[Cause]:
    cpu = domain.get("cpu")
    if cpu is None:
        return []
    if not isinstance(cpu, Mapping):
        return [Cause(f"{path}.domain.cpu", "cpu must be an object")]
    causes = []
    for key in ("sockets", "cores", "threads", "maxSockets"):
        value = cpu.get(key)
        if value is None:
            continue
        # As in KubeVirt (uint32 fields), 0 means "not set" and is defaulted to 1.
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            field = f"{path}.domain.cpu.{key}"
            causes.append(Cause(field, f"{field} must be a positive integer, got {value!r}"))
    return causes


def _machine_causes(domain: Mapping[str, Any], path: str) -> list[Cause]:
    machine = domain.get("machine")
    if not isinstance(machine, Mapping) or not machine.get("type"):
        return []
    mtype = str(machine["type"])
    if any(fnmatch.fnmatchcase(mtype, pattern) for pattern in SUPPORTED_MACHINES):
        return []
    field = f"{path}.domain.machine.type"
    return [Cause(field, f"{field} is not supported: {mtype} (allowed values: {list(SUPPORTED_MACHINES)})")]


def _firmware_causes(domain: Mapping[str, Any], path: str) -> list[Cause]:
    firmware = domain.get("firmware")
    if not isinstance(firmware, Mapping):
        return []
    bootloader = firmware.get("bootloader")
    field = f"{path}.domain.firmware.bootloader"
    if isinstance(bootloader, Mapping) and "bios" in bootloader and "efi" in bootloader:
        return [Cause(field, f"{field} has both EFI and BIOS configured, but they are mutually exclusive.")]
    fw_uuid = firmware.get("uuid")
    if fw_uuid is not None:
        try:
            uuid.UUID(str(fw_uuid))
        except ValueError:
            f = f"{path}.domain.firmware.uuid"
            return [Cause(f, f"{f} '{fw_uuid}' is not a valid UUID")]
    return []


def _disk_causes(disks: list[dict[str, Any]], volumes: list[dict[str, Any]], path: str) -> list[Cause]:
    causes: list[Cause] = []
    base = f"{path}.domain.devices.disks"
    volume_names = {_name(v) for v in volumes}
    for idx, disk in enumerate(disks):
        here = f"{base}[{idx}]"
        name = _required_name(disk, here, causes)
        if name is None:
            continue
        for other_idx in range(idx):
            if _name(disks[other_idx]) == name:
                causes.append(
                    Cause(f"{here}.name", f"{here} and {base}[{other_idx}] must not have the same Name.")
                )
        if name not in volume_names:
            causes.append(Cause(f"{here}.name", f"{here}.Name '{name}' not found."))
        targets = [t for t in DISK_TARGETS if disk.get(t) is not None]
        if len(targets) > 1:
            causes.append(Cause(here, f"{here} can only have a single target type defined"))
        target = targets[0] if targets else "disk"
        device = disk.get(target) or {}
        if not isinstance(device, Mapping):
            causes.append(Cause(f"{here}.{target}", f"{here}.{target} must be an object"))
            continue
        bus = device.get("bus")
        bus_field = f"{here}.{target}.bus"
        if bus in (None, ""):
            pass
        elif bus == "ide":
            causes.append(Cause(bus_field, "IDE bus is not supported"))
        elif bus not in DISK_BUSES:
            causes.append(
                Cause(
                    bus_field,
                    f"{here} is set with an unrecognized bus {bus}, must be one of: "
                    f"[{' '.join(DISK_BUSES[i] for i in (0, 2, 1, 3))}]",
                )
            )
        elif bus == "virtio" and target == "cdrom":
            causes.append(Cause(bus_field, "Bus type virtio is invalid for CD-ROM device"))
        elif bus == "sata" and target == "disk" and device.get("readonly"):
            causes.append(Cause(bus_field, "sata hard-disks do not support read-only."))
        serial = disk.get("serial")
        if serial is not None:
            if not isinstance(serial, str) or not _DISK_SERIAL.match(serial):
                causes.append(
                    Cause(
                        f"{here}.serial",
                        f"{here} must be made up of the following characters [A-Za-z0-9_.+-], if specified",
                    )
                )
            elif len(serial) > 36:
                causes.append(
                    Cause(
                        f"{here}.serial", f"{here} must be less than or equal to 36 in length, if specified"
                    )
                )
        cache = disk.get("cache")
        if cache is not None and cache not in ("none", "writethrough", "writeback"):
            causes.append(Cause(f"{here}.cache", f"{here}.cache has invalid value {cache}"))
    return causes


def _volume_causes(volumes: list[dict[str, Any]], path: str) -> list[Cause]:
    causes: list[Cause] = []
    base = f"{path}.volumes"
    for idx, volume in enumerate(volumes):
        here = f"{base}[{idx}]"
        name = _required_name(volume, here, causes)
        if name is not None:
            if dns1123_label_error(name):
                causes.append(
                    Cause(
                        f"{here}.name",
                        f"{here}.name {name!r} must be a valid DNS-1123 label: "
                        f"{dns1123_label_error(str(name))}",
                    )
                )
            for other_idx in range(idx):
                if _name(volumes[other_idx]) == name:
                    causes.append(
                        Cause(f"{here}.name", f"{here} and {base}[{other_idx}] must not have the same Name.")
                    )
        sources = [k for k in volume if k != "name"]
        known = [k for k in sources if k in VOLUME_SOURCES]
        for unknown in (k for k in sources if k not in VOLUME_SOURCES):
            causes.append(
                Cause(
                    f"{here}.{unknown}",
                    f"{here}.{unknown} is not a supported volume source, "
                    f"must be one of: {', '.join(VOLUME_SOURCES)}",
                    FIELD_VALUE_NOT_SUPPORTED,
                )
            )
        if len(known) != 1 and not (len(known) == 0 and sources):
            causes.append(Cause(here, f"{here} must have exactly one source type set"))
        for source in known:
            body = volume.get(source)
            if body is None:
                body = {}
            if not isinstance(body, Mapping):
                causes.append(Cause(f"{here}.{source}", f"{here}.{source} must be an object"))
                continue
            causes += _volume_source_causes(source, body, f"{here}.{source}", here)
    return causes


def _volume_source_causes(source: str, body: Mapping[str, Any], here: str, volume_path: str) -> list[Cause]:
    causes: list[Cause] = []

    def required(key: str) -> None:
        if not body.get(key):
            causes.append(Cause(f"{here}.{key}", f"{here}.{key} is a required field", FIELD_VALUE_REQUIRED))

    if source == "containerDisk":
        required("image")
        disk_path = body.get("path")
        if disk_path is not None:
            causes += path_causes(f"{here}.path", str(disk_path))
        policy = body.get("imagePullPolicy")
        if policy not in (None, "", "Always", "IfNotPresent", "Never"):
            causes.append(
                Cause(
                    f"{here}.imagePullPolicy",
                    f"{here}.imagePullPolicy: Unsupported value: {policy!r}: "
                    'supported values: "Always", "IfNotPresent", "Never"',
                    FIELD_VALUE_NOT_SUPPORTED,
                )
            )
    elif source == "emptyDisk":
        required("capacity")
        cap = _quantity(body.get("capacity"), f"{here}.capacity", causes) if body.get("capacity") else None
        if cap is not None and cap.value <= 0:
            causes.append(Cause(f"{here}.capacity", f"{here}.capacity '{cap}' must be greater than 0"))
    elif source in ("persistentVolumeClaim", "ephemeral"):
        claim = body if source == "persistentVolumeClaim" else (body.get("persistentVolumeClaim") or {})
        claim_path = here if source == "persistentVolumeClaim" else f"{here}.persistentVolumeClaim"
        if not isinstance(claim, Mapping) or not claim.get("claimName"):
            causes.append(
                Cause(
                    f"{claim_path}.claimName",
                    f"{claim_path}.claimName is a required field",
                    FIELD_VALUE_REQUIRED,
                )
            )
    elif source == "dataVolume":
        if not body.get("name"):
            causes.append(Cause(f"{volume_path}.name", "DataVolume 'name' must be set", FIELD_VALUE_REQUIRED))
    elif source == "hostDisk":
        causes += _host_disk_causes(body, here)
    elif source in ("cloudInitNoCloud", "cloudInitConfigDrive"):
        causes += _cloud_init_causes(body, here, source)
    elif source == "configMap":
        required("name")
    elif source == "secret":
        required("secretName")
    elif source == "serviceAccount":
        required("serviceAccountName")
    return causes


def _host_disk_causes(body: Mapping[str, Any], here: str) -> list[Cause]:
    causes: list[Cause] = []
    host_path = body.get("path")
    if not host_path:
        causes.append(
            Cause(f"{here}.path", f"{here}.path is required for hostDisk volume", FIELD_VALUE_NOT_FOUND)
        )
    else:
        causes += path_causes(f"{here}.path", str(host_path))
    dtype = body.get("type")
    if dtype not in ("Disk", "DiskOrCreate"):
        causes.append(
            Cause(
                f"{here}.type",
                f"{here}.type has invalid value '{dtype or ''}', allowed are 'Disk' or 'DiskOrCreate'",
            )
        )
    if body.get("capacity") is not None:
        if dtype != "DiskOrCreate":
            causes.append(
                Cause(
                    f"{here}.capacity",
                    f"{here}.capacity is allowed to pass only with {here}.type equal to 'DiskOrCreate'",
                )
            )
        else:
            cap = _quantity(body.get("capacity"), f"{here}.capacity", causes)
            if cap is not None and cap.value <= 0:
                causes.append(Cause(f"{here}.capacity", f"{here}.capacity '{cap}' must be greater than 0"))
    elif dtype == "DiskOrCreate":
        causes.append(
            Cause(
                f"{here}.capacity",
                f"{here}.capacity is required when {here}.type is 'DiskOrCreate'",
                FIELD_VALUE_REQUIRED,
            )
        )
    return causes


def path_causes(field: str, value: str) -> list[Cause]:
    """KubeVirt's rule for host/image paths: absolute, no `.`/`..` components, not `/`."""
    if value == "/":
        return [Cause(field, f"{field} must not point to root")]
    parts = value.split("/")
    if (
        not value.startswith("/")
        or any(p in (".", "..") for p in parts[1:])
        or "\x00" in value
        or "//" in value
    ):
        return [Cause(field, f"{field} must be an absolute path to a file without relative components")]
    return []


def _cloud_init_causes(body: Mapping[str, Any], here: str, source: str) -> list[Cause]:
    causes: list[Cause] = []
    user_count, user_len = 0, 0
    net_count, net_len = 0, 0
    secret = body.get("secretRef")
    if isinstance(secret, Mapping) and secret.get("name"):
        user_count += 1
    if body.get("userDataBase64"):
        user_count += 1
        try:
            user_len = len(base64.b64decode(str(body["userDataBase64"]), validate=True))
        except (binascii.Error, ValueError):
            f = f"{here}.userDataBase64"
            causes.append(Cause(f, f"{f}.{source}.userDataBase64 is not a valid base64 value."))
    if body.get("userData"):
        user_count += 1
        user_len = len(str(body["userData"]).encode())
    if user_count > 1:
        causes.append(Cause(here, f"{here} must have only one userdatasource set."))
    if user_len > CLOUD_INIT_USER_MAX_LEN:
        causes.append(
            Cause(
                here,
                f"{here} userdata exceeds {CLOUD_INIT_USER_MAX_LEN} byte limit. "
                "Should use UserDataSecretRef for larger data.",
            )
        )
    net_secret = body.get("networkDataSecretRef")
    if isinstance(net_secret, Mapping) and net_secret.get("name"):
        net_count += 1
    if body.get("networkDataBase64"):
        net_count += 1
        try:
            net_len = len(base64.b64decode(str(body["networkDataBase64"]), validate=True))
        except (binascii.Error, ValueError):
            f = f"{here}.networkDataBase64"
            causes.append(Cause(f, f"{f}.{source}.networkDataBase64 is not a valid base64 value."))
    if body.get("networkData"):
        net_count += 1
        net_len = len(str(body["networkData"]).encode())
    if net_count > 1:
        causes.append(Cause(here, f"{here} must have only one networkdata source set."))
    if net_len > CLOUD_INIT_NETWORK_MAX_LEN:
        causes.append(
            Cause(
                here,
                f"{here} networkdata exceeds {CLOUD_INIT_NETWORK_MAX_LEN} byte limit. "
                "Should use NetworkDataSecretRef for larger data.",
            )
        )
    if user_count == 0 and net_count == 0:
        causes.append(
            Cause(here, f"{here} must have at least one userdatasource or one networkdatasource set.")
        )
    return causes


def _network_causes(
    interfaces: list[dict[str, Any]], networks: list[dict[str, Any]], path: str
) -> list[Cause]:
    causes: list[Cause] = []
    ibase, nbase = f"{path}.domain.devices.interfaces", f"{path}.networks"
    network_by_name: dict[str, dict[str, Any]] = {}
    for idx, net in enumerate(networks):
        here = f"{nbase}[{idx}]"
        name = _required_name(net, here, causes)
        if name is None:
            continue
        if name in network_by_name:
            causes.append(
                Cause(
                    f"{here}.name",
                    f'Network with name "{name}" already exists, every network must have a unique name',
                )
            )
        network_by_name[str(name)] = net
        types = [k for k in net if k != "name"]
        if not types:
            causes.append(Cause(here, "should have a network type"))
        elif len(types) > 1:
            causes.append(Cause(here, "should have only one network type"))
        elif types[0] not in NETWORK_SOURCES:
            causes.append(
                Cause(
                    f"{here}.{types[0]}",
                    f"{here}.{types[0]} is not a supported network type, must be one of: "
                    f"{', '.join(NETWORK_SOURCES)}",
                    FIELD_VALUE_NOT_SUPPORTED,
                )
            )
        elif types[0] == "multus" and not (
            isinstance(net.get("multus"), Mapping) and net["multus"].get("networkName")
        ):
            causes.append(Cause(here, "CNI delegating plugin must have a networkName"))

    iface_names: set[str] = set()
    used_networks: set[str] = set()
    pod_ifaces = 0
    for idx, iface in enumerate(interfaces):
        here = f"{ibase}[{idx}]"
        name = _required_name(iface, here, causes)
        if name is None:
            continue
        if name in iface_names:
            causes.append(
                Cause(f"{here}.name", "Only one interface can be connected to one specific network")
            )
        iface_names.add(name)
        if not _IFACE_NAME.match(name):
            causes.append(
                Cause(
                    f"{here}.name",
                    "Network interface name can only contain alphabetical characters, numbers, "
                    "dashes (-) or underscores (_)",
                )
            )
        target_net = network_by_name.get(name)
        if target_net is None:
            causes.append(Cause(f"{here}.name", f"{here}.name '{name}' not found."))
        used_networks.add(name)
        bindings = [b for b in INTERFACE_BINDINGS if b in iface]
        if len(bindings) != 1:
            causes.append(
                Cause(
                    here, f"logical {name} interface must have exactly one binding method or binding plugin"
                )
            )
        is_pod = target_net is not None and "pod" in target_net
        if is_pod:
            pod_ifaces += 1
        if "masquerade" in bindings and target_net is not None and not is_pod:
            causes.append(Cause(f"{here}.name", "Masquerade interface only implemented with pod network"))
        model = iface.get("model")
        if model is not None and model not in NIC_MODELS:
            causes.append(
                Cause(
                    f"{here}.model",
                    f"interface {here}.name has unsupported model {model!r}, must be one of: "
                    f"{', '.join(NIC_MODELS)}",
                    FIELD_VALUE_NOT_SUPPORTED,
                )
            )
        mac = iface.get("macAddress")
        if mac is not None and (not isinstance(mac, str) or not _MAC.match(mac)):
            causes.append(
                Cause(f"{here}.macAddress", f"interface {here}.name has malformed MAC address ({mac}).")
            )
        causes += _port_causes(iface, here)
    if pod_ifaces > 1:
        causes.append(
            Cause(
                f"{path}.domain.devices.interfaces",
                f"more than one interface is connected to a pod network in {path}.domain.devices.interfaces",
            )
        )
    for idx, net in enumerate(networks):
        name = _name(net)
        if name and name not in used_networks:
            causes.append(Cause(f"{nbase}[{idx}].name", f"{nbase}[{idx}].name '{name}' not found."))
    return causes


def _port_causes(iface: Mapping[str, Any], here: str) -> list[Cause]:
    causes: list[Cause] = []
    ports = iface.get("ports")
    if ports is None:
        return causes
    if not isinstance(ports, list):
        return [Cause(f"{here}.ports", f"{here}.ports must be a list")]
    seen: set[str] = set()
    for pidx, port in enumerate(ports):
        pfield = f"{here}.ports[{pidx}]"
        if not isinstance(port, Mapping):
            causes.append(Cause(pfield, f"{pfield} must be an object"))
            continue
        pname = port.get("name")
        if pname is not None and not isinstance(pname, str):
            causes.append(Cause(f"{pfield}.name", f"Invalid name of the port: {pname!r}"))
        elif pname:
            if pname in seen:
                causes.append(Cause(f"{pfield}.name", f"Duplicate name of the port: {pname}"))
            seen.add(str(pname))
            if not isinstance(pname, str) or dns1123_label_error(pname) or len(pname) > 15:
                causes.append(Cause(f"{pfield}.name", f"Invalid name of the port: {pname}"))
        proto = port.get("protocol")
        if proto not in (None, "", "TCP", "UDP"):
            causes.append(Cause(f"{pfield}.protocol", "Unknown protocol, only TCP or UDP allowed"))
        number = port.get("port")
        if number is None:
            causes.append(Cause(f"{pfield}.port", "Port field is mandatory.", FIELD_VALUE_REQUIRED))
        elif not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
            causes.append(Cause(f"{pfield}.port", "Port field must be in range 0 < x < 65536."))
    return causes


def _boot_order_causes(
    disks: list[dict[str, Any]], interfaces: list[dict[str, Any]], path: str
) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[int] = set()
    for kind, items in (("disks", disks), ("interfaces", interfaces)):
        for idx, item in enumerate(items):
            order = item.get("bootOrder")
            if order is None:
                continue
            here = f"{path}.domain.devices.{kind}[{idx}]"
            if not isinstance(order, int) or isinstance(order, bool) or order < 1:
                causes.append(Cause(f"{here}.bootOrder", f"{here} must have a boot order > 0, if supplied"))
                continue
            if order in seen:
                causes.append(
                    Cause(
                        f"{here}.bootOrder",
                        f"Boot order for {here}.bootOrder already set for a different device.",
                    )
                )
            seen.add(order)
    return causes
