"""Resource types: what the server knows about each kind it serves (built-in and CRD-defined).

A `ResourceType` is one (group, version, plural). Per-kind behaviour lives in its fields:
printer columns, field selectors, subresources, generation rules, whether strategic merge
applies, and for custom resources the structural schema.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubevisor.apiserver import tables
from kubevisor.apiserver.selectors import METADATA_FIELDS, FieldGetter, path_getter
from kubevisor.apiserver.tables import Column, age_column, jsonpath_column, name_column

Obj = dict[str, Any]

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ScaleSpec:
    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str | None = None


@dataclass
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status: bool = False
    scale: ScaleSpec | None = None
    generation: bool = False
    strategic: bool = True
    columns: list[Column] = field(default_factory=lambda: [name_column(), age_column()])
    field_selectors: dict[str, FieldGetter] = field(default_factory=lambda: dict(METADATA_FIELDS))
    schema: Obj | None = None  # structural schema (custom resources)
    known_fields: set[str] | None = None  # top-level fields of a built-in kind
    storage_prefix: str = ""
    custom: bool = False
    extra_subresources: list[str] = field(default_factory=list)
    name_is_label: bool = False  # DNS-1123 label (Namespaces) instead of subdomain
    defaulter: Callable[[Obj], None] | None = None
    verbs: list[str] = field(default_factory=lambda: list(ALL_VERBS))
    storage_version: str = ""
    # a kind stored as another one (events.k8s.io Events are core Events): converters both ways
    stored_as: tuple[str, str, str] | None = None  # (group, version, plural)
    convert_out: Callable[[Obj], Obj] | None = None
    convert_in: Callable[[Obj], Obj] | None = None

    def __post_init__(self) -> None:
        if not self.storage_prefix:
            self.storage_prefix = f"/{self.group or 'core'}/{self.plural}/"
        if not self.storage_version:
            self.storage_version = self.version

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def key(self, namespace: str, name: str) -> str:
        return f"{self.storage_prefix}{namespace or '-'}/{name}"

    def prefix(self, namespace: str) -> str:
        return f"{self.storage_prefix}{namespace}/" if namespace else self.storage_prefix

    def subresource_names(self) -> list[str]:
        subs = list(self.extra_subresources)
        if self.status:
            subs.append("status")
        if self.scale is not None:
            subs.append("scale")
        return subs


# -- built-in kinds ------------------------------------------------------------------------


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _get(obj: Any, *path: Any) -> Any:
    for part in path:
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and isinstance(part, int) and part < len(obj):
            obj = obj[part]
        else:
            return None
    return obj


def _col(
    name: str, typ: str, getter: Callable[[Obj], Any], priority: int = 0, description: str = ""
) -> Column:
    return Column(name, typ, getter, priority, "", description)


def _storage_class_name(sc: Obj) -> str:
    annotations = _meta(sc).get("annotations") or {}
    default = "true" in (
        annotations.get("storageclass.kubernetes.io/is-default-class"),
        annotations.get("storageclass.beta.kubernetes.io/is-default-class"),
    )
    return str(_meta(sc).get("name") or "") + (" (default)" if default else "")


def _pod_ready(pod: Obj) -> str:
    containers = _get(pod, "spec", "containers") or []
    statuses = _get(pod, "status", "containerStatuses") or []
    ready = sum(1 for s in statuses if isinstance(s, dict) and s.get("ready"))
    return f"{ready}/{len(containers)}"


def _pod_status(pod: Obj) -> str:
    if _meta(pod).get("deletionTimestamp"):
        return "Terminating"
    reason = _get(pod, "status", "reason")
    if reason:
        return str(reason)
    for status in _get(pod, "status", "containerStatuses") or []:
        waiting = _get(status, "state", "waiting", "reason")
        if waiting:
            return str(waiting)
        terminated = _get(status, "state", "terminated", "reason")
        if terminated:
            return str(terminated)
    return str(_get(pod, "status", "phase") or "Pending")


def _pod_restarts(pod: Obj) -> int:
    return sum(
        int(s.get("restartCount", 0))
        for s in _get(pod, "status", "containerStatuses") or []
        if isinstance(s, dict)
    )


def _node_status(node: Obj) -> str:
    ready = "Unknown"
    for cond in _get(node, "status", "conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            ready = "Ready" if cond.get("status") == "True" else "NotReady"
    if _get(node, "spec", "unschedulable"):
        ready += ",SchedulingDisabled"
    return ready


def _node_roles(node: Obj) -> str:
    roles = sorted(
        k.split("/", 1)[1]
        for k in (_meta(node).get("labels") or {})
        if k.startswith("node-role.kubernetes.io/")
    )
    return ",".join(roles) or "<none>"


def _node_ip(node: Obj, kind: str) -> str:
    for addr in _get(node, "status", "addresses") or []:
        if isinstance(addr, dict) and addr.get("type") == kind:
            return str(addr.get("address"))
    return "<none>"


def _service_ports(svc: Obj) -> str:
    parts = []
    for port in _get(svc, "spec", "ports") or []:
        text = f"{port.get('port')}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        parts.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _endpoints(ep: Obj) -> str:
    out = []
    for subset in ep.get("subsets") or []:
        for addr in subset.get("addresses") or []:
            for port in subset.get("ports") or [{}]:
                out.append(f"{addr.get('ip')}:{port.get('port')}" if port else str(addr.get("ip")))
    if not out:
        return "<none>"
    return ",".join(out[:3]) + (f" + {len(out) - 3} more..." if len(out) > 3 else "")


def _event_object(ev: Obj) -> str:
    ref = ev.get("involvedObject") or ev.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _event_last_seen(ev: Obj) -> str:
    ts = ev.get("lastTimestamp") or ev.get("eventTime") or _meta(ev).get("creationTimestamp")
    return tables.age(ts)


def _count(field_name: str) -> Callable[[Obj], int]:
    return lambda o: (
        len(o.get(field_name) or {}) + (len(o.get("binaryData") or {}) if field_name == "data" else 0)
    )


def _default_namespace(ns: Obj) -> None:
    spec = ns.setdefault("spec", {})
    spec.setdefault("finalizers", ["kubernetes"])
    ns.setdefault("status", {})["phase"] = ns.get("status", {}).get("phase") or "Active"
    name = _meta(ns).get("name")
    if name:
        ns["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name


def _default_pod(pod: Obj) -> None:
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("serviceAccountName", "default")
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("imagePullPolicy", "IfNotPresent")
            container.setdefault("resources", {})
    status = pod.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", "BestEffort")


def _default_secret(secret: Obj) -> None:
    secret.setdefault("type", "Opaque")
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict):
        data = secret.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _default_service(svc: Obj) -> None:
    spec = svc.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    svc.setdefault("status", {}).setdefault("loadBalancer", {})


def _default_pvc(pvc: Obj) -> None:
    pvc.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    pvc.setdefault("status", {}).setdefault("phase", "Pending")


def _default_pv(pv: Obj) -> None:
    spec = pv.setdefault("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    pv.setdefault("status", {}).setdefault("phase", "Pending")


TOP_FIELDS = {"apiVersion", "kind", "metadata"}

# events.k8s.io/v1 field <-> core/v1 field; the rest share their names
_EVENT_RENAMES = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_EVENT_RENAMES_BACK = {v: k for k, v in _EVENT_RENAMES.items()}


def event_to_events_v1(core: Obj) -> Obj:
    out = {_EVENT_RENAMES_BACK.get(k, k): v for k, v in core.items()}
    out["apiVersion"] = "events.k8s.io/v1"
    return out


def event_to_core(events_v1: Obj) -> Obj:
    out = {_EVENT_RENAMES.get(k, k): v for k, v in events_v1.items()}
    out["apiVersion"] = "v1"
    return out


def builtin_types() -> list[ResourceType]:
    """The built-in kinds, one ResourceType per served (group, version)."""
    core_event_fields = dict(METADATA_FIELDS)
    for fname in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"):
        core_event_fields[f"involvedObject.{fname}"] = path_getter("involvedObject", fname)
    core_event_fields.update(
        {
            "reason": path_getter("reason"),
            "type": path_getter("type"),
            "source": path_getter("source", "component"),
            "reportingComponent": path_getter("reportingComponent"),
        }
    )
    pod_fields = dict(METADATA_FIELDS)
    pod_fields.update(
        {
            "spec.nodeName": path_getter("spec", "nodeName"),
            "spec.restartPolicy": path_getter("spec", "restartPolicy"),
            "spec.schedulerName": path_getter("spec", "schedulerName"),
            "spec.serviceAccountName": path_getter("spec", "serviceAccountName"),
            "spec.hostNetwork": path_getter("spec", "hostNetwork"),
            "status.phase": path_getter("status", "phase"),
            "status.podIP": path_getter("status", "podIP"),
            "status.nominatedNodeName": path_getter("status", "nominatedNodeName"),
        }
    )
    name, agec = name_column(), age_column()
    created_at = _col("Created At", "date", lambda o: _meta(o).get("creationTimestamp"))
    return [
        ResourceType(
            "",
            "v1",
            "Namespace",
            "namespaces",
            "namespace",
            False,
            ["ns"],
            status=True,
            columns=[name, _col("Status", "string", lambda o: _get(o, "status", "phase")), agec],
            field_selectors={**METADATA_FIELDS, "status.phase": path_getter("status", "phase")},
            known_fields=TOP_FIELDS | {"spec", "status"},
            extra_subresources=["finalize"],
            name_is_label=True,
            defaulter=_default_namespace,
            verbs=["create", "delete", "get", "list", "patch", "update", "watch"],
        ),
        ResourceType(
            "",
            "v1",
            "Node",
            "nodes",
            "node",
            False,
            ["no"],
            status=True,
            columns=[
                name,
                _col("Status", "string", _node_status),
                _col("Roles", "string", _node_roles),
                agec,
                _col("Version", "string", lambda o: _get(o, "status", "nodeInfo", "kubeletVersion")),
                _col("Internal-IP", "string", lambda o: _node_ip(o, "InternalIP"), 1),
                _col("External-IP", "string", lambda o: _node_ip(o, "ExternalIP"), 1),
                _col("OS-Image", "string", lambda o: _get(o, "status", "nodeInfo", "osImage"), 1),
                _col("Kernel-Version", "string", lambda o: _get(o, "status", "nodeInfo", "kernelVersion"), 1),
            ],
            field_selectors={**METADATA_FIELDS, "spec.unschedulable": path_getter("spec", "unschedulable")},
            known_fields=TOP_FIELDS | {"spec", "status"},
        ),
        ResourceType(
            "",
            "v1",
            "Pod",
            "pods",
            "pod",
            True,
            ["po"],
            ["all"],
            status=True,
            columns=[
                name,
                _col("Ready", "string", _pod_ready),
                _col("Status", "string", _pod_status),
                _col("Restarts", "string", _pod_restarts),
                agec,
                _col("IP", "string", lambda o: _get(o, "status", "podIP") or "<none>", 1),
                _col("Node", "string", lambda o: _get(o, "spec", "nodeName") or "<none>", 1),
            ],
            field_selectors=pod_fields,
            known_fields=TOP_FIELDS | {"spec", "status"},
            extra_subresources=["binding", "log"],
            defaulter=_default_pod,
        ),
        ResourceType(
            "",
            "v1",
            "Event",
            "events",
            "event",
            True,
            ["ev"],
            columns=[
                _col("Last Seen", "string", _event_last_seen),
                _col("Type", "string", lambda o: o.get("type")),
                _col("Reason", "string", lambda o: o.get("reason")),
                _col("Object", "string", _event_object),
                _col("Message", "string", lambda o: o.get("message")),
            ],
            field_selectors=core_event_fields,
            known_fields=TOP_FIELDS
            | {
                "involvedObject",
                "reason",
                "message",
                "source",
                "firstTimestamp",
                "lastTimestamp",
                "count",
                "type",
                "eventTime",
                "series",
                "action",
                "related",
                "reportingComponent",
                "reportingInstance",
            },
        ),
        ResourceType(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            "event",
            True,
            ["ev"],
            columns=[
                _col("Last Seen", "string", _event_last_seen),
                _col("Type", "string", lambda o: o.get("type")),
                _col("Reason", "string", lambda o: o.get("reason")),
                _col("Object", "string", _event_object),
                _col("Message", "string", lambda o: o.get("note")),
            ],
            field_selectors={  # evaluated on the stored (core) form
                **METADATA_FIELDS,
                "reason": path_getter("reason"),
                "type": path_getter("type"),
                "regarding.name": path_getter("involvedObject", "name"),
                "regarding.kind": path_getter("involvedObject", "kind"),
                "regarding.uid": path_getter("involvedObject", "uid"),
                "regarding.namespace": path_getter("involvedObject", "namespace"),
                "reportingController": path_getter("reportingComponent"),
            },
            storage_prefix="/core/events/",
            stored_as=("", "v1", "events"),
            convert_out=event_to_events_v1,
            convert_in=event_to_core,
            known_fields=TOP_FIELDS
            | {
                "eventTime",
                "series",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "regarding",
                "related",
                "note",
                "type",
                "deprecatedSource",
                "deprecatedFirstTimestamp",
                "deprecatedLastTimestamp",
                "deprecatedCount",
            },
        ),
        ResourceType(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            "configmap",
            True,
            ["cm"],
            columns=[name, _col("Data", "integer", _count("data")), agec],
            known_fields=TOP_FIELDS | {"data", "binaryData", "immutable"},
        ),
        ResourceType(
            "",
            "v1",
            "Secret",
            "secrets",
            "secret",
            True,
            columns=[
                name,
                _col("Type", "string", lambda o: o.get("type")),
                _col("Data", "integer", _count("data")),
                agec,
            ],
            field_selectors={**METADATA_FIELDS, "type": path_getter("type")},
            known_fields=TOP_FIELDS | {"data", "stringData", "type", "immutable"},
            defaulter=_default_secret,
        ),
        ResourceType(
            "",
            "v1",
            "Service",
            "services",
            "service",
            True,
            ["svc"],
            ["all"],
            status=True,
            columns=[
                name,
                _col("Type", "string", lambda o: _get(o, "spec", "type")),
                _col("Cluster-IP", "string", lambda o: _get(o, "spec", "clusterIP") or "<none>"),
                _col(
                    "External-IP",
                    "string",
                    lambda o: ",".join(_get(o, "spec", "externalIPs") or []) or "<none>",
                ),
                _col("Port(s)", "string", _service_ports),
                agec,
                _col(
                    "Selector",
                    "string",
                    lambda o: (
                        ",".join(f"{k}={v}" for k, v in sorted((_get(o, "spec", "selector") or {}).items()))
                        or "<none>"
                    ),
                    1,
                ),
            ],
            known_fields=TOP_FIELDS | {"spec", "status"},
            name_is_label=True,
            defaulter=_default_service,
        ),
        ResourceType(
            "",
            "v1",
            "Endpoints",
            "endpoints",
            "endpoints",
            True,
            ["ep"],
            columns=[name, _col("Endpoints", "string", _endpoints), agec],
            known_fields=TOP_FIELDS | {"subsets"},
        ),
        ResourceType(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            "persistentvolume",
            False,
            ["pv"],
            status=True,
            columns=[
                name,
                _col("Capacity", "string", lambda o: _get(o, "spec", "capacity", "storage")),
                _col("Access Modes", "string", lambda o: ",".join(_get(o, "spec", "accessModes") or [])),
                _col("Reclaim Policy", "string", lambda o: _get(o, "spec", "persistentVolumeReclaimPolicy")),
                _col("Status", "string", lambda o: _get(o, "status", "phase")),
                _col(
                    "Claim",
                    "string",
                    lambda o: "/".join(
                        x
                        for x in (
                            _get(o, "spec", "claimRef", "namespace"),
                            _get(o, "spec", "claimRef", "name"),
                        )
                        if x
                    ),
                ),
                _col("StorageClass", "string", lambda o: _get(o, "spec", "storageClassName") or ""),
                agec,
            ],
            known_fields=TOP_FIELDS | {"spec", "status"},
            defaulter=_default_pv,
        ),
        ResourceType(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            True,
            ["pvc"],
            status=True,
            columns=[
                name,
                _col("Status", "string", lambda o: _get(o, "status", "phase")),
                _col("Volume", "string", lambda o: _get(o, "spec", "volumeName") or ""),
                _col("Capacity", "string", lambda o: _get(o, "status", "capacity", "storage") or ""),
                _col("Access Modes", "string", lambda o: ",".join(_get(o, "status", "accessModes") or [])),
                _col("StorageClass", "string", lambda o: _get(o, "spec", "storageClassName") or ""),
                agec,
            ],
            known_fields=TOP_FIELDS | {"spec", "status"},
            defaulter=_default_pvc,
        ),
        ResourceType(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            True,
            ["sa"],
            columns=[name, _col("Secrets", "integer", lambda o: len(o.get("secrets") or [])), agec],
            known_fields=TOP_FIELDS | {"secrets", "imagePullSecrets", "automountServiceAccountToken"},
        ),
        ResourceType(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            "storageclass",
            False,
            ["sc"],
            columns=[
                Column(
                    "Name", "string", _storage_class_name, 0, "name", name.description
                ),  # "NAME (default)" as kube-apiserver prints the default class
                _col("Provisioner", "string", lambda o: o.get("provisioner")),
                _col("ReclaimPolicy", "string", lambda o: o.get("reclaimPolicy", "Delete")),
                _col("VolumeBindingMode", "string", lambda o: o.get("volumeBindingMode", "Immediate")),
                _col(
                    "AllowVolumeExpansion",
                    "string",
                    lambda o: str(bool(o.get("allowVolumeExpansion"))).lower(),
                ),
                agec,
            ],
            known_fields=TOP_FIELDS
            | {
                "provisioner",
                "parameters",
                "reclaimPolicy",
                "mountOptions",
                "allowVolumeExpansion",
                "volumeBindingMode",
                "allowedTopologies",
            },
        ),
        ResourceType(
            "node.k8s.io",
            "v1",
            "RuntimeClass",
            "runtimeclasses",
            "runtimeclass",
            False,
            columns=[name, _col("Handler", "string", lambda o: o.get("handler")), agec],
            known_fields=TOP_FIELDS | {"handler", "overhead", "scheduling"},
        ),
        ResourceType(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            "lease",
            True,
            columns=[name, _col("Holder", "string", lambda o: _get(o, "spec", "holderIdentity") or ""), agec],
            known_fields=TOP_FIELDS | {"spec"},
        ),
        ResourceType(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            "customresourcedefinition",
            False,
            ["crd", "crds"],
            ["api-extensions"],
            status=True,
            generation=True,
            columns=[name, created_at],
            known_fields=TOP_FIELDS | {"spec", "status"},
        ),
    ]


# -- custom resources ------------------------------------------------------------------------

DEFAULT_COLUMNS = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]


def crd_types(crd: Obj) -> list[ResourceType]:
    """The ResourceTypes a CRD defines: one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec["group"]
    storage_version = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), "")
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served"):
            continue
        subs = version.get("subresources") or {}
        scale_spec = subs.get("scale")
        scale = None
        if isinstance(scale_spec, dict):
            scale = ScaleSpec(
                scale_spec.get("specReplicasPath", ".spec.replicas"),
                scale_spec.get("statusReplicasPath", ".status.replicas"),
                scale_spec.get("labelSelectorPath"),
            )
        columns = [name_column()]
        for col in version.get("additionalPrinterColumns") or DEFAULT_COLUMNS:
            columns.append(
                jsonpath_column(
                    col["name"],
                    col.get("type", "string"),
                    col["jsonPath"],
                    int(col.get("priority", 0)),
                    col.get("format", ""),
                    col.get("description", ""),
                )
            )
        selectable = dict(METADATA_FIELDS)
        for sel in version.get("selectableFields") or []:
            jp = sel.get("jsonPath", "")
            selectable[jp.lstrip(".")] = path_getter(*jp.lstrip(".").split("."))
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        out.append(
            ResourceType(
                group,
                version["name"],
                names["kind"],
                names["plural"],
                names.get("singular") or names["kind"].lower(),
                spec.get("scope") == "Namespaced",
                list(names.get("shortNames") or []),
                list(names.get("categories") or []),
                status="status" in subs,
                scale=scale,
                generation=True,
                strategic=False,
                columns=columns,
                field_selectors=selectable,
                schema=schema,
                storage_prefix=f"/{group}/{names['plural']}/",
                custom=True,
                storage_version=storage_version,
            )
        )
    return out
