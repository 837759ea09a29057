"""JSON schemas for the kubevirt.io/v1 shapes Kubevisor models, and unknown-field detection.

The schemas are written in the OpenAPI v3 subset that CRDs accept (`type`, `properties`,
`items`, `required`, `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`),
plus `additionalProperties: false` on the objects we model fully. That one keyword is what
lets `jsonschema` report unknown fields by path; `to_crd_schema()` drops it (CRDs prune unknown
fields instead) to give a structural `openAPIV3Schema`.

Fields that KubeVirt has but Kubevisor does not model in depth (affinity, probes, …) are kept
as open objects so that any valid KubeVirt manifest is accepted.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema

Schema = dict[str, Any]


def _obj(properties: Mapping[str, Schema], *, required: tuple[str, ...] = (), desc: str = "") -> Schema:
    schema: Schema = {"type": "object", "properties": dict(properties), "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    if desc:
        schema["description"] = desc
    return schema


def _open(desc: str = "") -> Schema:
    """An object Kubevisor accepts as is (KubeVirt's schema applies; we do not model it)."""
    schema: Schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if desc:
        schema["description"] = desc
    return schema


def _list(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _map(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


STRING: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
INT: Schema = {"type": "integer"}
QUANTITY: Schema = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "description": "A Kubernetes resource quantity (e.g. 128Mi, 1G, 500m).",
}
EMPTY: Schema = _obj({})
ANY_LIST: Schema = {"type": "array", "items": _open()}
LOCAL_OBJECT_REFERENCE = _obj({"name": STRING})

_DISK_TARGET = _obj({"bus": STRING, "readonly": BOOL, "pciAddress": STRING})
_CDROM_TARGET = _obj({"bus": STRING, "readonly": BOOL, "tray": STRING})
_LUN_TARGET = _obj({"bus": STRING, "readonly": BOOL, "reservation": BOOL})

DISK = _obj(
    {
        "name": STRING,
        "disk": _DISK_TARGET,
        "cdrom": _CDROM_TARGET,
        "lun": _LUN_TARGET,
        "bootOrder": INT,
        "serial": STRING,
        "cache": STRING,
        "io": STRING,
        "tag": STRING,
        "dedicatedIOThread": BOOL,
        "shareable": BOOL,
        "errorPolicy": STRING,
        "blockSize": _open(),
        "changedBlockTracking": BOOL,
    },
    required=("name",),
)

_PORT = _obj({"name": STRING, "port": INT, "protocol": STRING}, required=("port",))
INTERFACE = _obj(
    {
        "name": STRING,
        "model": STRING,
        "macAddress": STRING,
        "bootOrder": INT,
        "pciAddress": STRING,
        "tag": STRING,
        "acpiIndex": INT,
        "state": STRING,
        "ports": _list(_PORT),
        "portRanges": ANY_LIST,
        "dhcpOptions": _open(),
        "bridge": EMPTY,
        "masquerade": EMPTY,
        "sriov": EMPTY,
        "slirp": EMPTY,
        "macvtap": EMPTY,
        "passt": EMPTY,
        "passtBinding": EMPTY,
        "binding": _obj({"name": STRING}),
    },
    required=("name",),
)

NETWORK = _obj(
    {
        "name": STRING,
        "pod": _obj({"vmNetworkCIDR": STRING, "vmIPv6NetworkCIDR": STRING}),
        "multus": _obj({"networkName": STRING, "default": BOOL}),
        "resourceClaim": _open(),
    },
    required=("name",),
)

_CLOUD_INIT = _obj(
    {
        "userData": STRING,
        "userDataBase64": STRING,
        "secretRef": LOCAL_OBJECT_REFERENCE,
        "networkData": STRING,
        "networkDataBase64": STRING,
        "networkDataSecretRef": LOCAL_OBJECT_REFERENCE,
    }
)
_PVC_SOURCE = _obj({"claimName": STRING, "readOnly": BOOL, "hotpluggable": BOOL})

VOLUME = _obj(
    {
        "name": STRING,
        "containerDisk": _obj(
            {"image": STRING, "imagePullPolicy": STRING, "imagePullSecret": STRING, "path": STRING}
        ),
        "persistentVolumeClaim": _PVC_SOURCE,
        "dataVolume": _obj({"name": STRING, "hotpluggable": BOOL}),
        "cloudInitNoCloud": _CLOUD_INIT,
        "cloudInitConfigDrive": _CLOUD_INIT,
        "emptyDisk": _obj({"capacity": QUANTITY}),
        "ephemeral": _obj({"persistentVolumeClaim": _PVC_SOURCE}),
        "hostDisk": _obj({"path": STRING, "type": STRING, "capacity": QUANTITY, "shared": BOOL}),
        "configMap": _obj({"name": STRING, "optional": BOOL, "volumeLabel": STRING}),
        "secret": _obj({"secretName": STRING, "optional": BOOL, "volumeLabel": STRING}),
        "serviceAccount": _obj({"serviceAccountName": STRING}),
        "downwardAPI": _obj({"fields": ANY_LIST, "volumeLabel": STRING}),
        "downwardMetrics": _open(),
        "sysprep": _open(),
        "memoryDump": _open(),
        "containerPath": _open(),
    },
    required=("name",),
)

DEVICES = _obj(
    {
        "disks": _list(DISK),
        "interfaces": _list(INTERFACE),
        "autoattachSerialConsole": BOOL,
        "autoattachGraphicsDevice": BOOL,
        "autoattachPodInterface": BOOL,
        "autoattachMemBalloon": BOOL,
        "autoattachInputDevice": BOOL,
        "autoattachVSOCK": BOOL,
        "logSerialConsole": BOOL,
        "blockMultiQueue": BOOL,
        "networkInterfaceMultiqueue": BOOL,
        "useVirtioTransitional": BOOL,
        "disableHotplug": BOOL,
        "rng": EMPTY,
        "watchdog": _obj(
            {"name": STRING, "i6300esb": _obj({"action": STRING}), "diag288": _obj({"action": STRING})}
        ),
        "inputs": ANY_LIST,
        "filesystems": ANY_LIST,
        "gpus": ANY_LIST,
        "hostDevices": ANY_LIST,
        "panicDevices": ANY_LIST,
        "clientPassthrough": _open(),
        "downwardMetrics": _open(),
        "sound": _open(),
        "tpm": _open(),
        "video": _open(),
    }
)

RESOURCES = _obj({"requests": _map(QUANTITY), "limits": _map(QUANTITY), "overcommitGuestOverhead": BOOL})

DOMAIN = _obj(
    {
        "resources": RESOURCES,
        "memory": _obj(
            {
                "guest": QUANTITY,
                "maxGuest": QUANTITY,
                "hugepages": _obj({"pageSize": STRING}),
                "reservedOverhead": _open(),
            }
        ),
        "cpu": _obj(
            {
                "sockets": INT,
                "cores": INT,
                "threads": INT,
                "maxSockets": INT,
                "model": STRING,
                "features": ANY_LIST,
                "dedicatedCpuPlacement": BOOL,
                "isolateEmulatorThread": BOOL,
                "numa": _open(),
                "realtime": _open(),
            }
        ),
        "machine": _obj({"type": STRING}),
        "firmware": _obj(
            {
                "uuid": STRING,
                "serial": STRING,
                "bootloader": _obj(
                    {
                        "bios": _obj({"useSerial": BOOL}),
                        "efi": _obj({"secureBoot": BOOL, "persistent": BOOL}),
                    }
                ),
                "kernelBoot": _obj(
                    {
                        "kernelArgs": STRING,
                        "container": _obj(
                            {
                                "image": STRING,
                                "imagePullPolicy": STRING,
                                "imagePullSecret": STRING,
                                "kernelPath": STRING,
                                "initrdPath": STRING,
                            }
                        ),
                    }
                ),
                "acpi": _open(),
            }
        ),
        "devices": DEVICES,
        "clock": _open(),
        "features": _open(),
        "chassis": _open(),
        "ioThreads": _open(),
        "ioThreadsPolicy": STRING,
        "launchSecurity": _open(),
        "rebootPolicy": STRING,
    },
    required=("devices",),
)

VMI_SPEC = _obj(
    {
        "domain": DOMAIN,
        "volumes": _list(VOLUME),
        "networks": _list(NETWORK),
        "terminationGracePeriodSeconds": INT,
        "hostname": STRING,
        "subdomain": STRING,
        "nodeSelector": _map(STRING),
        "affinity": _open(),
        "tolerations": ANY_LIST,
        "topologySpreadConstraints": ANY_LIST,
        "evictionStrategy": STRING,
        "startStrategy": STRING,
        "priorityClassName": STRING,
        "schedulerName": STRING,
        "serviceAccountName": STRING,
        "livenessProbe": _open(),
        "readinessProbe": _open(),
        "dnsPolicy": STRING,
        "dnsConfig": _open(),
        "accessCredentials": ANY_LIST,
        "architecture": STRING,
        "resourceClaims": ANY_LIST,
        "utilityVolumes": ANY_LIST,
    },
    required=("domain",),
)

OBJECT_META = _open("Standard Kubernetes object metadata.")
TEMPLATE = _obj({"metadata": OBJECT_META, "spec": VMI_SPEC})

_MATCHER = _obj(
    {
        "name": STRING,
        "kind": STRING,
        "revisionName": STRING,
        "inferFromVolume": STRING,
        "inferFromVolumeFailurePolicy": STRING,
    }
)
VM_SPEC = _obj(
    {
        "running": BOOL,
        "runStrategy": STRING,
        "template": TEMPLATE,
        "instancetype": _MATCHER,
        "preference": _MATCHER,
        "dataVolumeTemplates": ANY_LIST,
        "updateVolumesStrategy": STRING,
    },
    required=("template",),
)


LABEL_SELECTOR = _obj(
    {
        "matchLabels": _map(STRING),
        "matchExpressions": _list(
            _obj({"key": STRING, "operator": STRING, "values": _list(STRING)}, required=("key", "operator"))
        ),
    }
)

VMIRS_SPEC = _obj(
    {"replicas": INT, "selector": LABEL_SELECTOR, "template": TEMPLATE, "paused": BOOL},
    required=("selector", "template"),
)

# A preset's domain is a partial DomainSpec merged into matching VMIs: nothing in it is required.
PRESET_SPEC = _obj(
    {"selector": LABEL_SELECTOR, "domain": _open("Partial DomainSpec applied to matching VMIs.")}
)

MIGRATION_SPEC = _obj(
    {
        "vmiName": STRING,
        "addedNodeSelector": _map(STRING),
        "priority": STRING,
        "receive": _open(),
        "sendTo": _open(),
    }
)

INSTANCETYPE_SPEC = _obj(
    {
        "cpu": _obj(
            {
                "guest": INT,
                "model": STRING,
                "dedicatedCPUPlacement": BOOL,
                "isolateEmulatorThread": BOOL,
                "maxSockets": INT,
                "numa": _open(),
                "realtime": _open(),
            },
            required=("guest",),
        ),
        "memory": _obj(
            {
                "guest": QUANTITY,
                "hugepages": _obj({"pageSize": STRING}),
                "maxGuest": QUANTITY,
                "overcommitPercent": INT,
            },
            required=("guest",),
        ),
        "annotations": _map(STRING),
        "nodeSelector": _map(STRING),
        "schedulerName": STRING,
        "gpus": ANY_LIST,
        "hostDevices": ANY_LIST,
        "ioThreads": _open(),
        "ioThreadsPolicy": STRING,
        "launchSecurity": _open(),
    },
    required=("cpu", "memory"),
)

PREFERENCE_SPEC = _obj(
    {
        "cpu": _open(),
        "devices": _open(),
        "features": _open(),
        "firmware": _open(),
        "machine": _obj({"preferredMachineType": STRING}),
        "clock": _open(),
        "volumes": _open(),
        "requirements": _open(),
        "annotations": _map(STRING),
        "preferSpreadSocketToCoreRatio": INT,
        "preferredArchitecture": STRING,
        "preferredLaunchSecurity": _open(),
        "preferredSubdomain": STRING,
        "preferredTerminationGracePeriodSeconds": INT,
    }
)


def _top(spec: Schema, *, status: bool = True, spec_required: bool = True) -> Schema:
    props: dict[str, Schema] = {"apiVersion": STRING, "kind": STRING, "metadata": OBJECT_META, "spec": spec}
    if status:
        props["status"] = _open()
    return _obj(props, required=("spec",) if spec_required else ())


SCHEMAS: dict[str, Schema] = {
    "VirtualMachineInstance": _top(VMI_SPEC),
    "VirtualMachine": _top(VM_SPEC),
    "VirtualMachineInstanceReplicaSet": _top(VMIRS_SPEC),
    "VirtualMachineInstancePreset": _top(PRESET_SPEC, status=False),
    "VirtualMachineInstanceMigration": _top(MIGRATION_SPEC),
    "VirtualMachineInstancetype": _top(INSTANCETYPE_SPEC, status=False),
    "VirtualMachineClusterInstancetype": _top(INSTANCETYPE_SPEC, status=False),
    "VirtualMachinePreference": _top(PREFERENCE_SPEC, status=False),
    "VirtualMachineClusterPreference": _top(PREFERENCE_SPEC, status=False),
}


@functools.cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = SCHEMAS[kind]
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def unknown_fields(obj: Mapping[str, Any], kind: str) -> list[str]:
    """Paths (`spec.domain.devices.disks[0].foo`) of fields the schema for `kind` does not know."""
    if kind not in SCHEMAS:
        return []
    found: list[str] = []
    for error in _iter_additional_property_errors(_validator(kind).iter_errors(obj)):
        instance, schema = error.instance, error.schema
        if not isinstance(instance, Mapping):
            continue
        known = schema.get("properties", {})
        base = json_path(error.absolute_path)
        for key in instance:
            if key not in known:
                found.append(f"{base}.{key}" if base else str(key))
    return sorted(set(found), key=found.index)


def _iter_additional_property_errors(
    errors: Iterator[jsonschema.ValidationError],
) -> Iterator[jsonschema.ValidationError]:
    for error in errors:
        if error.validator == "additionalProperties" and error.validator_value is False:
            yield error
        for sub in error.context or ():
            yield from _iter_additional_property_errors(iter([sub]))


def json_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def to_crd_schema(schema: Schema) -> Schema:
    """A structural OpenAPI v3 schema for a CRD: unknown fields are pruned, not rejected."""
    out = copy.deepcopy(schema)

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("additionalProperties") is False:
                del node["additionalProperties"]
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(out)
    if "metadata" in out.get("properties", {}):
        # CRDs may only say that metadata is an object; the apiserver validates ObjectMeta itself.
        out["properties"]["metadata"] = {"type": "object"}
    return out
