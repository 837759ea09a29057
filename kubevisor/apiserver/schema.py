"""CRD structural schemas (pure): structural checks, pruning, defaulting and validation.

Schemas are apiextensions v1 `openAPIV3Schema` nodes. Validation converts the OpenAPI
subset to JSON Schema (nullable, int-or-string) and runs `jsonschema`.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

Obj = dict[str, Any]

OBJECT_META_FIELDS = {
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
}
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def structural_errors(schema: Any, path: str = "openAPIV3Schema") -> list[str]:
    """Why this schema is not structural (empty when it is)."""
    if not isinstance(schema, dict):
        return [f"{path}: must be an object"]
    errors: list[str] = []
    int_or_string = schema.get("x-kubernetes-int-or-string") is True
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    typ = schema.get("type")
    if typ is None and not (int_or_string or preserve):
        errors.append(f"{path}.type: Required value: must not be empty for specified object fields")
    elif typ is not None and typ not in _TYPES:
        errors.append(f"{path}.type: Unsupported value: {typ!r}")
    if "properties" in schema and "additionalProperties" in schema:
        errors.append(
            f"{path}.additionalProperties: Forbidden: additionalProperties and properties are "
            "mutual exclusive"
        )
    for name, sub in (schema.get("properties") or {}).items():
        errors.extend(structural_errors(sub, f"{path}.properties[{name}]"))
    if isinstance(schema.get("additionalProperties"), dict):
        errors.extend(structural_errors(schema["additionalProperties"], f"{path}.additionalProperties"))
    if "items" in schema:
        errors.extend(structural_errors(schema["items"], f"{path}.items"))
    elif typ == "array":
        errors.append(f"{path}.items: Required value: must be specified")
    return errors


def to_json_schema(schema: Any) -> Any:
    """OpenAPI v3 (Kubernetes subset) to a JSON Schema that `jsonschema` understands."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: Obj = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in (
            "nullable",
            "default",
            "description",
            "example",
            "externalDocs",
            "format",
        ):
            continue
        if key == "properties":
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") or key in ("allOf", "anyOf", "oneOf"):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["allOf"] = [*out.get("allOf", []), {"anyOf": [{"type": "integer"}, {"type": "string"}]}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def validation_errors(obj: Obj, schema: Obj) -> list[tuple[str, str]]:
    """(field path, message) for each violation, paths in Kubernetes' dotted style."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    root = dict(schema)
    props = {
        k: v for k, v in (root.get("properties") or {}).items() if k not in ("apiVersion", "kind", "metadata")
    }
    root["properties"] = props
    if isinstance(root.get("required"), list):
        root["required"] = [r for r in root["required"] if r not in ("apiVersion", "kind", "metadata")]
    validator = jsonschema.Draft7Validator(to_json_schema(root))
    out: list[tuple[str, str]] = []
    for error in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
        path = ""
        for part in error.absolute_path:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        if error.validator == "required" and isinstance(error.message, str):
            missing = error.message.split("'")[1] if "'" in error.message else ""
            path = f"{path}.{missing}" if path else missing
            out.append((path, "Required value"))
            continue
        out.append((path or "<root>", _message(error)))
    return out


def _message(error: jsonschema.ValidationError) -> str:
    v = error.validator
    inst = error.instance
    if v == "type":
        names = {
            str: "string",
            bool: "boolean",
            int: "integer",
            float: "number",
            dict: "object",
            list: "array",
            type(None): "null",
        }
        got = names.get(type(inst), type(inst).__name__)
        return f'Invalid value: "{got}": must be of type {error.validator_value}'
    if v == "enum":
        allowed = ", ".join(f'"{x}"' for x in error.validator_value)
        return f"Unsupported value: {inst!r}: supported values: {allowed}"
    return f"Invalid value: {inst!r}: {error.message}"


def prune(
    obj: Any, schema: Any, path: str = "", unknown: list[str] | None = None, root: bool = True
) -> list[str]:
    """Drop (in place) fields the schema does not declare; return their paths."""
    unknown = [] if unknown is None else unknown
    if not isinstance(schema, dict):
        return unknown
    if isinstance(obj, dict):
        if root:
            meta = obj.get("metadata")
            if isinstance(meta, dict):
                for key in list(meta):
                    if key not in OBJECT_META_FIELDS:
                        unknown.append(f"metadata.{key}")
                        del meta[key]
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        for key in list(obj):
            if root and key in ("apiVersion", "kind", "metadata"):
                continue
            sub_path = f"{path}.{key}" if path else key
            if isinstance(props, dict) and key in props:
                prune(obj[key], props[key], sub_path, unknown, False)
            elif isinstance(addl, dict):
                prune(obj[key], addl, sub_path, unknown, False)
            elif addl is True or preserve:
                continue
            else:
                unknown.append(sub_path)
                del obj[key]
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(obj):
            prune(item, schema["items"], f"{path}[{index}]", unknown, False)
    return unknown


def apply_defaults(obj: Any, schema: Any) -> None:
    """Set schema `default` values (in place) for absent fields, recursively."""
    if not isinstance(schema, dict):
        return
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if not isinstance(sub, dict):
                continue
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for key in obj:
                if key not in (schema.get("properties") or {}):
                    apply_defaults(obj[key], addl)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])


def list_map_keys(schema: Any, path: tuple[str, ...]) -> list[str] | None:
    """`x-kubernetes-list-map-keys` of the list at path, when it is a map list."""
    node = schema
    for part in path:
        if not isinstance(node, dict):
            return None
        if node.get("type") == "array":
            node = node.get("items")
            if not isinstance(node, dict):
                return None
        props = node.get("properties") or {}
        node = props.get(part) if part in props else node.get("additionalProperties")
    if isinstance(node, dict) and node.get("x-kubernetes-list-type") == "map":
        keys = node.get("x-kubernetes-list-map-keys")
        return list(keys) if isinstance(keys, list) else None
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def decode_errors(obj: Any, schema_node: Any, path: str = "") -> list[str]:
    """Values a typed decoder (Go's encoding/json) would refuse: wrong JSON types for typed fields.

    Lenient where Go is: numbers are accepted for string fields (resource quantities take both),
    null is accepted anywhere.
    """
    if not isinstance(schema_node, dict) or obj is None:
        return []
    typ = schema_node.get("type")
    got = _json_type(obj)
    want = {
        "string": ("string", "number"),
        "integer": ("number",),
        "number": ("number",),
        "boolean": ("bool",),
        "array": ("array",),
        "object": ("object",),
    }.get(str(typ))
    if want is not None and got not in want:
        return [f"{path or '<root>'}: cannot unmarshal {got} into a field of type {typ}"]
    if typ == "integer" and isinstance(obj, float) and not obj.is_integer():
        return [f"{path}: cannot unmarshal number {obj} into a field of type integer"]
    errors: list[str] = []
    if isinstance(obj, dict):
        props = schema_node.get("properties")
        addl = schema_node.get("additionalProperties")
        for key, value in obj.items():
            sub = f"{path}.{key}" if path else key
            if isinstance(props, dict) and key in props:
                errors.extend(decode_errors(value, props[key], sub))
            elif isinstance(addl, dict):
                errors.extend(decode_errors(value, addl, sub))
    elif isinstance(obj, list) and isinstance(schema_node.get("items"), dict):
        for index, item in enumerate(obj):
            errors.extend(decode_errors(item, schema_node["items"], f"{path}[{index}]"))
    return errors
