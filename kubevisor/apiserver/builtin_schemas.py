"""Schemas of the built-in kinds, derived from the official Python client's models.

The generated client (`kubernetes.client.models`) carries each type's fields, JSON names and
descriptions. From them we build (1) OpenAPI v3 component schemas, so `kubectl explain pods.spec`
works, and (2) structural schemas for pruning, so unknown fields anywhere in a built-in object are
reported under fieldValidation=Strict/Warn like the real apiserver's strict decoding.
"""

from __future__ import annotations

import functools
import re
from typing import Any

Obj = dict[str, Any]

MODELS = {
    ("", "Namespace"): "V1Namespace",
    ("", "Node"): "V1Node",
    ("", "Pod"): "V1Pod",
    ("", "Event"): "CoreV1Event",
    ("events.k8s.io", "Event"): "EventsV1Event",
    ("", "ConfigMap"): "V1ConfigMap",
    ("", "Secret"): "V1Secret",
    ("", "Service"): "V1Service",
    ("", "Endpoints"): "V1Endpoints",
    ("", "PersistentVolume"): "V1PersistentVolume",
    ("", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("", "ServiceAccount"): "V1ServiceAccount",
    ("storage.k8s.io", "StorageClass"): "V1StorageClass",
    ("node.k8s.io", "RuntimeClass"): "V1RuntimeClass",
    ("coordination.k8s.io", "Lease"): "V1Lease",
    ("apiextensions.k8s.io", "CustomResourceDefinition"): "V1CustomResourceDefinition",
}
_SCALARS: dict[str, Obj] = {
    "str": {"type": "string"},
    "int": {"type": "integer", "format": "int64"},
    "bool": {"type": "boolean"},
    "float": {"type": "number", "format": "double"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "bytearray": {"type": "string", "format": "byte"},
}
_LIST = re.compile(r"^List\[(.+)\]$")
_DICT = re.compile(r"^Dict\[str, (.+)\]$")


def _models() -> Any:
    import kubernetes.client.models as models

    return models


def _model(name: str) -> Any:
    return getattr(_models(), name, None)


def _fields(cls: Any) -> list[tuple[str, str, str]]:
    """(json name, type string, description) of a model's fields."""
    out = []
    for py_name, type_name in cls.openapi_types.items():
        field = cls.model_fields.get(py_name)
        desc = (field.description or "") if field is not None else ""
        out.append((cls.attribute_map.get(py_name, py_name), type_name, desc))
    return out


@functools.cache
def structural(model_name: str) -> Obj:
    """A (possibly self-referencing) structural schema of a model, for pruning."""
    cache: dict[str, Obj] = {}

    def of_type(type_name: str) -> Obj:
        if type_name in _SCALARS:
            return dict(_SCALARS[type_name])
        if type_name == "object":
            return {"x-kubernetes-preserve-unknown-fields": True}
        m = _LIST.match(type_name)
        if m:
            return {"type": "array", "items": of_type(m.group(1))}
        m = _DICT.match(type_name)
        if m:
            return {"type": "object", "additionalProperties": of_type(m.group(1))}
        return of_model(type_name)

    def of_model(name: str) -> Obj:
        if name in cache:
            return cache[name]
        cls = _model(name)
        if cls is None:  # a type we do not know: accept anything
            return {"x-kubernetes-preserve-unknown-fields": True}
        node: Obj = {"type": "object"}
        cache[name] = node
        node["properties"] = {json_name: of_type(t) for json_name, t, _ in _fields(cls)}
        return node

    return of_model(model_name)


def _ref_name(model_name: str) -> str:
    return f"io.k8s.kubevisor.{model_name}"


def openapi_components(model_name: str) -> dict[str, Obj]:
    """OpenAPI v3 component schemas (with $refs and descriptions) for a model and what it uses."""
    out: dict[str, Obj] = {}

    def of_type(type_name: str) -> Obj:
        if type_name in _SCALARS:
            return dict(_SCALARS[type_name])
        if type_name == "object":
            return {"x-kubernetes-preserve-unknown-fields": True}
        m = _LIST.match(type_name)
        if m:
            return {"type": "array", "items": of_type(m.group(1))}
        m = _DICT.match(type_name)
        if m:
            return {"type": "object", "additionalProperties": of_type(m.group(1))}
        add(type_name)
        return {"allOf": [{"$ref": f"#/components/schemas/{_ref_name(type_name)}"}]}

    def add(name: str) -> None:
        key = _ref_name(name)
        if key in out:
            return
        cls = _model(name)
        node: Obj = {"type": "object"}
        out[key] = node
        if cls is None:
            node["x-kubernetes-preserve-unknown-fields"] = True
            return
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].strip()
        if doc and not doc.startswith("NOTE:"):
            node["description"] = " ".join(doc.split())
        props = {}
        for json_name, type_name, desc in _fields(cls):
            prop = of_type(type_name)
            if desc:
                prop["description"] = desc
            props[json_name] = prop
        node["properties"] = props

    add(model_name)
    return out


def model_for(group: str, kind: str) -> str | None:
    return MODELS.get((group, kind))


def component_name(group: str, kind: str) -> str | None:
    model = model_for(group, kind)
    return _ref_name(model) if model else None
