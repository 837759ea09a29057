"""OpenAPI v3 documents per group-version (pure): enough for kubectl's fieldValidation probe
(a `patch` operation with a single-object GVK and the parameter) and for `kubectl explain`
(component schemas with a GVK list). CRD schemas are served as written.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubevisor.apiserver import builtin_schemas
from kubevisor.apiserver.resources import ResourceType

Obj = dict[str, Any]

_OBJECT_META = {
    "description": "ObjectMeta is metadata that all persisted resources must have.",
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
}

_BUILTIN_DESCRIPTIONS = {
    "Namespace": "Namespace provides a scope for Names. Use of multiple namespaces is optional.",
    "Pod": "Pod is a collection of containers that can run on a host.",
    "Node": "Node is a worker node in Kubernetes.",
    "ConfigMap": "ConfigMap holds configuration data for pods to consume.",
    "Secret": "Secret holds secret data of a certain type.",
    "Service": "Service is a named abstraction of software service consisting of local port and a selector.",
}

PARAMS = [
    {
        "name": "dryRun",
        "in": "query",
        "description": "When present, indicates that modifications should not be persisted.",
        "schema": {"type": "string", "uniqueItems": True},
    },
    {
        "name": "fieldManager",
        "in": "query",
        "description": "fieldManager is a name associated with the actor or "
        "entity that is making these changes.",
        "schema": {"type": "string", "uniqueItems": True},
    },
    {
        "name": "fieldValidation",
        "in": "query",
        "description": "fieldValidation instructs the server on how to handle "
        "objects in the request containing unknown or duplicate fields.",
        "schema": {"type": "string", "uniqueItems": True},
    },
    {
        "name": "force",
        "in": "query",
        "description": "Force is going to force Apply requests.",
        "schema": {"type": "boolean", "uniqueItems": True},
    },
]


def schema_name(rt: ResourceType) -> str:
    if not rt.custom:
        builtin = builtin_schemas.component_name(rt.group, rt.kind)
        if builtin is not None:
            return builtin
    group = rt.group or "core"
    rev = ".".join(reversed(group.split("."))) if rt.custom else f"io.k8s.api.{group.split('.')[0]}"
    return f"{rev}.{rt.version}.{rt.kind}"


def _component(rt: ResourceType) -> Obj:
    gvk = [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
    if rt.schema is not None:
        body = json.loads(json.dumps(rt.schema))
        body.setdefault("type", "object")
        props = body.setdefault("properties", {})
        props.setdefault(
            "apiVersion",
            {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object.",
            },
        )
        props.setdefault(
            "kind",
            {
                "type": "string",
                "description": "Kind is a string value representing the REST "
                "resource this object represents.",
            },
        )
        props["metadata"] = {
            "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
            "description": "Standard object's metadata.",
        }
    else:
        body = {
            "type": "object",
            "description": _BUILTIN_DESCRIPTIONS.get(rt.kind, f"{rt.kind} ({rt.api_version})"),
            "properties": {
                "apiVersion": {
                    "type": "string",
                    "description": "APIVersion defines the versioned schema of this "
                    "representation of an object.",
                },
                "kind": {
                    "type": "string",
                    "description": "Kind is a string value representing the REST resource "
                    "this object represents.",
                },
                "metadata": {
                    "allOf": [
                        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
                    ],
                    "description": "Standard object's metadata.",
                },
            },
            "x-kubernetes-preserve-unknown-fields": True,
        }
        for field in sorted((rt.known_fields or set()) - {"apiVersion", "kind", "metadata"}):
            body["properties"][field] = {
                "description": f"{field} of the {rt.kind}.",
                "x-kubernetes-preserve-unknown-fields": True,
                "type": "object",
            }
    body["x-kubernetes-group-version-kind"] = gvk
    return body


def _paths(rt: ResourceType) -> Obj:
    base = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    scope = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    ref = {"$ref": f"#/components/schemas/{schema_name(rt)}"}
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}

    def op(action: str, params: list[Obj]) -> Obj:
        return {
            "description": f"{action} {rt.kind}",
            "operationId": f"{action}{rt.kind}",
            "responses": ok,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": params,
        }

    item = {
        "get": op("get", []),
        "put": op("put", PARAMS[:3]),
        "patch": op("patch", PARAMS),
        "delete": op("delete", PARAMS[:1]),
    }
    coll = {"get": op("list", []), "post": op("post", PARAMS[:3])}
    out = {f"{scope}/{{name}}": item, scope: coll}
    if rt.status:
        out[f"{scope}/{{name}}/status"] = {
            "get": op("get", []),
            "put": op("put", PARAMS[:3]),
            "patch": op("patch", PARAMS),
        }
    return out


def document(group: str, version: str, types: list[ResourceType], k8s_version: str) -> Obj:
    selected = [rt for rt in types if rt.group == group and rt.version == version]
    paths: Obj = {}
    schemas: Obj = {"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": _OBJECT_META}
    for rt in selected:
        paths.update(_paths(rt))
        model = None if rt.custom else builtin_schemas.model_for(rt.group, rt.kind)
        if model is not None:
            components = builtin_schemas.openapi_components(model)
            main = dict(components[schema_name(rt)])
            main["x-kubernetes-group-version-kind"] = [
                {"group": rt.group, "version": rt.version, "kind": rt.kind}
            ]
            components[schema_name(rt)] = main
            schemas.update(components)
        else:
            schemas[schema_name(rt)] = _component(rt)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": k8s_version},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def doc_hash(doc: Obj) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()
