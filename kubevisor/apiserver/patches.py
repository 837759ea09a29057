"""Patch application (pure): JSON Patch (RFC 6902), merge patch (RFC 7386) and the subset of
strategic merge patch that kubectl sends for the built-in kinds served here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonpatch

Obj = dict[str, Any]
Path = tuple[str, ...]
TEST_FAILED = "jsonpatch test operation does not apply"  # callers that guard with `test` look for it


class PatchError(ValueError):
    """The patch cannot be applied. `code` is the HTTP status the apiserver answers."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def apply_json_patch(doc: Obj, patch: Any) -> Obj:
    if not isinstance(patch, list):
        raise PatchError("json patch must be a list of operations", 400)
    if len(patch) > 10000:
        raise PatchError("the allowed maximum operations in a JSON patch is 10000, got more", 422)
    for index, op in enumerate(patch):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"json patch operation {index} must be an object with 'op' and 'path'", 400)
    try:
        result = jsonpatch.JsonPatch(patch).apply(doc, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PatchError(
            f"the server rejected our request due to an error in our request: {TEST_FAILED}: {exc}"
        ) from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise PatchError(f"the server rejected our request due to an error in our request: {exc}") from exc
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise PatchError(f"invalid json patch: {exc}", 422) from exc
    if not isinstance(result, dict):
        raise PatchError("json patch must leave an object")
    return result


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# -- strategic merge patch -----------------------------------------------------------------

# Merge keys of the list fields we serve, by the path of field names leading to the list.
# A list not named here is replaced (or unioned, for the primitive lists in _PRIMITIVE_MERGE).
_MERGE_KEYS: dict[Path, str] = {}
_POD_SPEC_LISTS = {
    ("containers",): "name",
    ("initContainers",): "name",
    ("ephemeralContainers",): "name",
    ("volumes",): "name",
    ("imagePullSecrets",): "name",
    ("hostAliases",): "ip",
    ("containers", "ports"): "containerPort",
    ("containers", "env"): "name",
    ("containers", "volumeMounts"): "mountPath",
    ("containers", "volumeDevices"): "devicePath",
    ("initContainers", "ports"): "containerPort",
    ("initContainers", "env"): "name",
    ("initContainers", "volumeMounts"): "mountPath",
}
for _sub, _key in _POD_SPEC_LISTS.items():
    _MERGE_KEYS[("spec", *_sub)] = _key
    _MERGE_KEYS[("spec", "template", "spec", *_sub)] = _key
_MERGE_KEYS.update(
    {
        ("metadata", "ownerReferences"): "uid",
        ("status", "conditions"): "type",
        ("status", "addresses"): "type",
        ("status", "containerStatuses"): "name",
        ("status", "initContainerStatuses"): "name",
        ("status", "podIPs"): "ip",
        ("spec", "ports"): "port",  # Service
        ("spec", "taints"): "key",  # Node
        ("secrets",): "name",  # ServiceAccount
    }
)
_PRIMITIVE_MERGE: set[Path] = {("metadata", "finalizers"), ("spec", "finalizers")}

_DIRECTIVE_PREFIXES = ("$setElementOrder/", "$deleteFromPrimitiveList/", "$retainKeys", "$patch")


def merge_key_for(path: Path) -> str | None:
    return _MERGE_KEYS.get(path)


def apply_strategic_merge_patch(
    original: Obj, patch: Obj, merge_key: Callable[[Path], str | None] = merge_key_for
) -> Obj:
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object", 400)
    result = _smp_map(original, patch, (), merge_key)
    if not isinstance(result, dict):
        raise PatchError("strategic merge patch must leave an object")
    return result


def _smp_map(original: Any, patch: Obj, path: Path, merge_key: Callable[[Path], str | None]) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive is not None:
        raise PatchError(f"unknown patch directive {directive!r}", 400)
    result = dict(original) if isinstance(original, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith(_DIRECTIVE_PREFIXES):
            continue
        sub = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(result.get(key), value, sub, merge_key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(result.get(key), value, sub, merge_key)
        else:
            result[key] = copy.deepcopy(value)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
        elif key.startswith("$setElementOrder/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = _reorder(result[field], value, merge_key((*path, field)))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        if key is not None and isinstance(item, dict):
            return item.get(key)
        return item

    wanted = [ident(o) for o in order]
    ranked = [i for w in wanted for i in items if ident(i) == w]
    rest = [i for i in items if ident(i) not in wanted]
    return ranked + rest


def _smp_list(
    original: Any, patch: list[Any], path: Path, merge_key: Callable[[Path], str | None]
) -> list[Any]:
    base = list(original) if isinstance(original, list) else []
    key = merge_key(path)
    if key is None:
        if path in _PRIMITIVE_MERGE:
            out = list(base)
            for value in patch:
                if value not in out:
                    out.append(copy.deepcopy(value))
            return out
        # A replace directive inside a list without a merge key still means "replace".
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [
            copy.deepcopy({k: x for k, x in v.items() if k != "$patch"})
            for v in patch
            if not (isinstance(v, dict) and v.get("$patch") == "replace")
        ]
    out = list(base)
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"list {'.'.join(path)} merges by {key!r}: elements must be objects", 400)
        if key not in item:
            raise PatchError(f"list {'.'.join(path)}: element is missing merge key {key!r}", 422)
        ident = item[key]
        index = next((i for i, v in enumerate(out) if isinstance(v, dict) and v.get(key) == ident), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
            continue
        if index is None:
            out.append(_smp_map({}, item, path, merge_key))
        else:
            out[index] = _smp_map(out[index], item, path, merge_key)
    return out
