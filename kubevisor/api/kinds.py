"""The API kinds Kubevisor serves: names, scope, versions, printer columns, subresources.

One `ResourceKind` per CRD, with the values KubeVirt's virt-operator registers
(`pkg/virt-operator/resource/generate/components/crds.go`), so that `kubectl get vmis`,
short names, categories and columns behave as on a KubeVirt cluster. `kubevisor.api.crds`
renders these into apiextensions.k8s.io/v1 CRDs; the apiserver uses them for discovery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubevisor.api.schema import SCHEMAS, Schema, to_crd_schema

KUBEVIRT_GROUP = "kubevirt.io"
INSTANCETYPE_GROUP = "instancetype.kubevirt.io"
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
READY_CONDITION = ".status.conditions[?(@.type=='Ready')].status"


@dataclass(frozen=True)
class Version:
    name: str
    served: bool = True
    storage: bool = False
    deprecated: bool = False
    deprecation_warning: str | None = None


@dataclass(frozen=True)
class ResourceKind:
    group: str
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    versions: tuple[Version, ...]
    namespaced: bool = True
    categories: tuple[str, ...] = ("all",)
    printer_columns: tuple[dict[str, Any], ...] = ()
    status_subresource: bool = False
    scale: dict[str, str] | None = None
    labels: dict[str, str] = field(default_factory=lambda: {"kubevirt.io": ""})

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def storage_version(self) -> str:
        return next(v.name for v in self.versions if v.storage)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.storage_version}"

    @property
    def schema(self) -> Schema:
        """The JSON schema with unknown-field detection (see kubevisor.api.schema)."""
        return SCHEMAS[self.kind]

    def crd(self) -> dict[str, Any]:
        """This kind as an apiextensions.k8s.io/v1 CustomResourceDefinition."""
        versions = []
        for version in self.versions:
            v: dict[str, Any] = {
                "name": version.name,
                "served": version.served,
                "storage": version.storage,
            }
            if version.deprecated:
                v["deprecated"] = True
                if version.deprecation_warning:
                    v["deprecationWarning"] = version.deprecation_warning
            if self.printer_columns:
                v["additionalPrinterColumns"] = [dict(c) for c in self.printer_columns]
            subresources: dict[str, Any] = {}
            if self.status_subresource:
                subresources["status"] = {}
            if self.scale:
                subresources["scale"] = dict(self.scale)
            if subresources:
                v["subresources"] = subresources
            v["schema"] = {"openAPIV3Schema": to_crd_schema(self.schema)}
            versions.append(v)
        names: dict[str, Any] = {
            "kind": self.kind,
            "listKind": f"{self.kind}List",
            "plural": self.plural,
            "singular": self.singular,
            "shortNames": list(self.short_names),
        }
        if self.categories:
            names["categories"] = list(self.categories)
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": self.crd_name, "labels": dict(self.labels)},
            "spec": {
                "group": self.group,
                "names": names,
                "scope": "Namespaced" if self.namespaced else "Cluster",
                "versions": versions,
            },
        }


def _core_versions() -> tuple[Version, ...]:
    return (
        Version("v1", storage=True),
        Version(
            "v1alpha3",
            deprecated=True,
            deprecation_warning="kubevirt.io/v1alpha3 is now deprecated and will be removed "
            "in a future release.",
        ),
    )


VIRTUAL_MACHINE_INSTANCE = ResourceKind(
    group=KUBEVIRT_GROUP,
    kind="VirtualMachineInstance",
    plural="virtualmachineinstances",
    singular="virtualmachineinstance",
    short_names=("vmi", "vmis"),
    versions=_core_versions(),
    printer_columns=(
        AGE_COLUMN,
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "IP", "type": "string", "jsonPath": ".status.interfaces[0].ipAddress"},
        {"name": "NodeName", "type": "string", "jsonPath": ".status.nodeName"},
        {"name": "Ready", "type": "string", "jsonPath": READY_CONDITION},
        {
            "name": "Live-Migratable",
            "type": "string",
            "jsonPath": ".status.conditions[?(@.type=='LiveMigratable')].status",
            "priority": 1,
        },
        {
            "name": "Paused",
            "type": "string",
            "jsonPath": ".status.conditions[?(@.type=='Paused')].status",
            "priority": 1,
        },
    ),
    # KubeVirt's VMI CRD has no status subresource: virt-handler/controller write the whole object.
    status_subresource=False,
)

VIRTUAL_MACHINE = ResourceKind(
    group=KUBEVIRT_GROUP,
    kind="VirtualMachine",
    plural="virtualmachines",
    singular="virtualmachine",
    short_names=("vm", "vms"),
    versions=_core_versions(),
    printer_columns=(
        AGE_COLUMN,
        {
            "name": "Status",
            "description": "Human Readable Status",
            "type": "string",
            "jsonPath": ".status.printableStatus",
        },
        {"name": "Ready", "type": "string", "jsonPath": READY_CONDITION},
    ),
    status_subresource=True,
)

VIRTUAL_MACHINE_INSTANCE_REPLICA_SET = ResourceKind(
    group=KUBEVIRT_GROUP,
    kind="VirtualMachineInstanceReplicaSet",
    plural="virtualmachineinstancereplicasets",
    singular="virtualmachineinstancereplicaset",
    short_names=("vmirs", "vmirss"),
    versions=_core_versions(),
    printer_columns=(
        {
            "name": "Desired",
            "type": "integer",
            "jsonPath": ".spec.replicas",
            "description": "Number of desired VirtualMachineInstances",
        },
        {
            "name": "Current",
            "type": "integer",
            "jsonPath": ".status.replicas",
            "description": "Number of managed and not final or deleted VirtualMachineInstances",
        },
        {
            "name": "Ready",
            "type": "integer",
            "jsonPath": ".status.readyReplicas",
            "description": "Number of managed VirtualMachineInstances which are ready to receive traffic",
        },
        AGE_COLUMN,
    ),
    status_subresource=True,
    scale={
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.labelSelector",
    },
)

VIRTUAL_MACHINE_INSTANCE_PRESET = ResourceKind(
    group=KUBEVIRT_GROUP,
    kind="VirtualMachineInstancePreset",
    plural="virtualmachineinstancepresets",
    singular="virtualmachineinstancepreset",
    short_names=("vmipreset", "vmipresets"),
    versions=(
        Version(
            "v1",
            deprecated=True,
            deprecation_warning="kubevirt.io/v1 VirtualMachineInstancePresets is now deprecated "
            "and will be removed in v2.",
        ),
        Version(  # KubeVirt still stores presets as v1alpha3
            "v1alpha3",
            storage=True,
            deprecated=True,
            deprecation_warning="kubevirt.io/v1alpha3 VirtualMachineInstancePresets is now deprecated "
            "and will be removed in v2.",
        ),
    ),
)

VIRTUAL_MACHINE_INSTANCE_MIGRATION = ResourceKind(
    group=KUBEVIRT_GROUP,
    kind="VirtualMachineInstanceMigration",
    plural="virtualmachineinstancemigrations",
    singular="virtualmachineinstancemigration",
    short_names=("vmim", "vmims"),
    versions=_core_versions(),
    printer_columns=(
        {
            "name": "Phase",
            "type": "string",
            "jsonPath": ".status.phase",
            "description": "The current phase of VM instance migration",
        },
        {
            "name": "VMI",
            "type": "string",
            "jsonPath": ".spec.vmiName",
            "description": "The name of the VMI to perform the migration on",
        },
    ),
    status_subresource=True,
)

_V1BETA1 = (Version("v1beta1", storage=True),)

VIRTUAL_MACHINE_INSTANCETYPE = ResourceKind(
    group=INSTANCETYPE_GROUP,
    kind="VirtualMachineInstancetype",
    plural="virtualmachineinstancetypes",
    singular="virtualmachineinstancetype",
    short_names=("vminstancetype", "vminstancetypes", "vmf", "vmfs"),
    versions=_V1BETA1,
)

VIRTUAL_MACHINE_CLUSTER_INSTANCETYPE = ResourceKind(
    group=INSTANCETYPE_GROUP,
    kind="VirtualMachineClusterInstancetype",
    plural="virtualmachineclusterinstancetypes",
    singular="virtualmachineclusterinstancetype",
    short_names=("vmclusterinstancetype", "vmclusterinstancetypes", "vmcf", "vmcfs"),
    versions=_V1BETA1,
    namespaced=False,
    categories=(),
)

VIRTUAL_MACHINE_PREFERENCE = ResourceKind(
    group=INSTANCETYPE_GROUP,
    kind="VirtualMachinePreference",
    plural="virtualmachinepreferences",
    singular="virtualmachinepreference",
    short_names=("vmpref", "vmprefs", "vmp", "vmps"),
    versions=_V1BETA1,
)

VIRTUAL_MACHINE_CLUSTER_PREFERENCE = ResourceKind(
    group=INSTANCETYPE_GROUP,
    kind="VirtualMachineClusterPreference",
    plural="virtualmachineclusterpreferences",
    singular="virtualmachineclusterpreference",
    short_names=("vmcp", "vmcps"),
    versions=_V1BETA1,
    namespaced=False,
    categories=(),
)

KINDS: tuple[ResourceKind, ...] = (
    VIRTUAL_MACHINE_INSTANCE,
    VIRTUAL_MACHINE,
    VIRTUAL_MACHINE_INSTANCE_REPLICA_SET,
    VIRTUAL_MACHINE_INSTANCE_PRESET,
    VIRTUAL_MACHINE_INSTANCE_MIGRATION,
    VIRTUAL_MACHINE_INSTANCETYPE,
    VIRTUAL_MACHINE_CLUSTER_INSTANCETYPE,
    VIRTUAL_MACHINE_PREFERENCE,
    VIRTUAL_MACHINE_CLUSTER_PREFERENCE,
)

BY_KIND: dict[str, ResourceKind] = {k.kind: k for k in KINDS}


def lookup(name: str) -> ResourceKind | None:
    """A kind by Kind, plural, singular or short name (case-insensitive), as kubectl resolves them."""
    wanted = name.lower()
    for k in KINDS:
        if wanted in (k.kind.lower(), k.plural, k.singular, *k.short_names):
            return k
    return None
