"""Discovery documents (pure): legacy APIVersions/APIGroupList/APIResourceList and aggregated v2."""

from __future__ import annotations

from typing import Any

from kubevisor.apiserver.extensions import APIGroupSpec, SubresourceSpec
from kubevisor.apiserver.resources import ResourceType

Obj = dict[str, Any]
Subs = dict[tuple[str, str, str], SubresourceSpec] | None

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

# Preferred order of groups in /apis (kubectl shows api-resources in this order).
_GROUP_ORDER = [
    "",
    "apiextensions.k8s.io",
    "coordination.k8s.io",
    "events.k8s.io",
    "node.k8s.io",
    "storage.k8s.io",
]


def _version_key(version: str) -> tuple[int, int, int]:
    # v1 > v1beta2 > v1beta1 > v1alpha1 (kube-aware ordering, highest first after sort)
    import re

    m = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not m:
        return (-1, 0, 0)
    stage = {"alpha": 0, "beta": 1, None: 2}[m.group(2)]
    return (stage, int(m.group(1)), int(m.group(3) or 0))


def groups(types: list[ResourceType], extra: list[APIGroupSpec]) -> dict[str, list[str]]:
    """group -> versions, preferred first."""
    out: dict[str, set[str]] = {}
    for rt in types:
        out.setdefault(rt.group, set()).add(rt.version)
    for spec in extra:
        out.setdefault(spec.group, set()).add(spec.version)
    ordered = sorted(
        out, key=lambda g: (_GROUP_ORDER.index(g) if g in _GROUP_ORDER else len(_GROUP_ORDER), g)
    )
    return {g: sorted(out[g], key=_version_key, reverse=True) for g in ordered}


def legacy_api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def legacy_group_list(types: list[ResourceType], extra: list[APIGroupSpec]) -> Obj:
    items = []
    for group, versions in groups(types, extra).items():
        if not group:
            continue
        vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        items.append({"name": group, "versions": vs, "preferredVersion": vs[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": items}


def legacy_group(group: str, types: list[ResourceType], extra: list[APIGroupSpec]) -> Obj | None:
    versions = groups(types, extra).get(group)
    if not versions:
        return None
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs, "preferredVersion": vs[0]}


def _resource_entries(rt: ResourceType, subs: Subs = None) -> list[Obj]:
    main: Obj = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": rt.verbs,
    }
    if rt.short_names:
        main["shortNames"] = rt.short_names
    if rt.categories:
        main["categories"] = rt.categories
    out = [main]
    for sub in rt.subresource_names():
        kind, verbs, group, version = rt.kind, ["get", "patch", "update"], None, None
        if sub == "scale":
            kind, group, version = "Scale", "autoscaling", "v1"
        elif sub == "binding":
            kind, verbs = "Binding", ["create"]
        elif sub == "log":
            kind, verbs = "Pod", ["get"]
        elif sub == "finalize":
            verbs = ["update"]
        entry: Obj = {
            "name": f"{rt.plural}/{sub}",
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": kind,
            "verbs": verbs,
        }
        if group is not None:
            entry["group"], entry["version"] = group, version
        out.append(entry)
    for spec in (subs or {}).values():
        if spec.group == rt.group and spec.plural == rt.plural:
            out.append(
                {
                    "name": f"{rt.plural}/{spec.name}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": spec.kind or rt.kind,
                    "verbs": spec.verbs,
                }
            )
    return out


def legacy_resource_list(
    group: str, version: str, types: list[ResourceType], extra: list[APIGroupSpec], subs: Subs = None
) -> Obj | None:
    gv = f"{group}/{version}" if group else version
    selected = [rt for rt in types if rt.group == group and rt.version == version]
    specs = [s for s in extra if s.group == group and s.version == version]
    if not selected and not specs:
        return None
    resources: list[Obj] = []
    for rt in selected:
        resources.extend(_resource_entries(rt, subs))
    for spec in specs:
        resources.extend(spec.resources)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _aggregated_resource(rt: ResourceType, subs: Subs = None) -> Obj:
    entry: Obj = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": rt.verbs,
    }
    if rt.short_names:
        entry["shortNames"] = rt.short_names
    if rt.categories:
        entry["categories"] = rt.categories
    sub_entries = []
    for sub in _resource_entries(rt, subs)[1:]:
        name = sub["name"].split("/", 1)[1]
        kind_group = sub.get("group", rt.group)
        kind_version = sub.get("version", rt.version)
        sub_entries.append(
            {
                "subresource": name,
                "responseKind": {"group": kind_group, "version": kind_version, "kind": sub["kind"]},
                "verbs": sub["verbs"],
            }
        )
    if sub_entries:
        entry["subresources"] = sub_entries
    return entry


def _aggregated_extra(spec: APIGroupSpec) -> list[Obj]:
    mains: dict[str, Obj] = {}
    for res in spec.resources:
        name = res["name"]
        if "/" in name:
            base, sub = name.split("/", 1)
            main = mains.setdefault(
                base,
                {
                    "resource": base,
                    "scope": "Namespaced" if res.get("namespaced") else "Cluster",
                    "verbs": [],
                    "responseKind": {
                        "group": spec.group,
                        "version": spec.version,
                        "kind": res.get("kind", ""),
                    },
                },
            )
            main.setdefault("subresources", []).append(
                {
                    "subresource": sub,
                    "responseKind": {
                        "group": spec.group,
                        "version": spec.version,
                        "kind": res.get("kind", ""),
                    },
                    "verbs": res.get("verbs", []),
                }
            )
        else:
            mains.setdefault(name, {}).update(
                {
                    "resource": name,
                    "scope": "Namespaced" if res.get("namespaced") else "Cluster",
                    "singularResource": res.get("singularName", ""),
                    "verbs": res.get("verbs", []),
                    "responseKind": {
                        "group": spec.group,
                        "version": spec.version,
                        "kind": res.get("kind", ""),
                    },
                }
            )
    return list(mains.values())


def aggregated(
    types: list[ResourceType],
    extra: list[APIGroupSpec],
    legacy_core: bool,
    media: str = "v2",
    subs: Subs = None,
) -> Obj:
    """APIGroupDiscoveryList for /api (legacy_core) or /apis."""
    items = []
    for group, versions in groups(types, extra).items():
        if (group == "") != legacy_core:
            continue
        vs = []
        for version in versions:
            resources = [
                _aggregated_resource(rt, subs) for rt in types if rt.group == group and rt.version == version
            ]
            for spec in extra:
                if spec.group == group and spec.version == version:
                    resources.extend(_aggregated_extra(spec))
            vs.append({"version": version, "resources": resources, "freshness": "Current"})
        items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": vs})
    api_version = "apidiscovery.k8s.io/v2" if media == "v2" else "apidiscovery.k8s.io/v2beta1"
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}
