"""Server-side apply and managedFields (pure), a reduced structured-merge-diff.

Field sets are sets of paths. A path element is a field name, or for lists merged by key a
`k:{...}` element; other lists are atomic (one leaf). Ownership is recorded per (manager,
operation, subresource) as FieldsV1 in `metadata.managedFields`.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Path = tuple[str, ...]
KeyFn = Callable[[tuple[str, ...]], list[str] | None]

# metadata fields that are owned like content; the rest are server-managed
_META_OWNED = {"labels", "annotations", "finalizers", "ownerReferences"}


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        super().__init__(f"{len(conflicts)} conflicts")
        self.conflicts = conflicts  # (manager, dotted field path)


def _elem_key(item: Any, keys: list[str]) -> str | None:
    if not isinstance(item, dict) or any(k not in item for k in keys):
        return None
    return "k:" + json.dumps({k: item[k] for k in sorted(keys)}, separators=(",", ":"))


def field_paths(obj: Any, keys_for: KeyFn, prefix: Path = (), names: tuple[str, ...] = ()) -> set[Path]:
    """Leaf paths of obj. `names` is the path of field names only, used to find list keys."""
    out: set[Path] = set()
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            if not prefix and key in ("apiVersion", "kind"):
                continue
            if prefix == ("f:metadata",) and key not in _META_OWNED:
                continue
            if not prefix and key == "metadata" and isinstance(value, dict):
                sub = field_paths(value, keys_for, ("f:metadata",), ("metadata",))
                out |= sub
                continue
            p = (*prefix, f"f:{key}")
            n = (*names, key)
            if isinstance(value, dict) and value:
                out |= field_paths(value, keys_for, p, n)
            elif isinstance(value, list) and value:
                keys = keys_for(n)
                elems = [_elem_key(item, keys) for item in value] if keys else []
                if keys and all(elems) and isinstance(value[0], dict):
                    for item, ek in zip(value, elems, strict=True):
                        assert ek is not None
                        ep = (*p, ek)
                        out.add((*ep, "."))
                        rest = {k: v for k, v in item.items() if k not in keys}
                        for k in keys:
                            out.add((*ep, f"f:{k}"))
                        out |= field_paths(rest, keys_for, ep, n) if rest else set()
                else:
                    out.add(p)
            else:
                out.add(p)
    return out


def to_fields_v1(paths: set[Path]) -> Obj:
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(part, {})
    return _dotify(root)


def _dotify(node: Obj) -> Obj:
    # An intermediate node that is itself also a leaf keeps ".", matching upstream's shape.
    return {k: _dotify(v) for k, v in node.items()}


def from_fields_v1(fields: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(fields, dict):
        return out
    if not fields and prefix:
        out.add(prefix)
    for key, value in fields.items():
        out |= from_fields_v1(value, (*prefix, key)) if value or key != "." else {(*prefix, key)}
    return out


def dotted(path: Path) -> str:
    text = ""
    for part in path:
        if part.startswith("f:"):
            text += "." + part[2:]
        elif part.startswith("k:"):
            text += "[" + part[2:] + "]"
        elif part == ".":
            continue
    return text


def value_at(obj: Any, path: Path, keys_for: KeyFn) -> Any:
    cur = obj
    for part in path:
        if part == ".":
            return cur
        if part.startswith("f:"):
            if not isinstance(cur, dict):
                return _MISSING
            cur = cur.get(part[2:], _MISSING)
        elif part.startswith("k:"):
            want = json.loads(part[2:])
            if not isinstance(cur, list):
                return _MISSING
            cur = next(
                (i for i in cur if isinstance(i, dict) and all(i.get(k) == v for k, v in want.items())),
                _MISSING,
            )
        if cur is _MISSING:
            return _MISSING
    return cur


class _Missing:
    pass


_MISSING = _Missing()


def remove_path(obj: Any, path: Path) -> None:
    if not path:
        return
    parent = value_at(obj, path[:-1], lambda n: None) if len(path) > 1 else obj
    last = path[-1]
    if last == ".":
        # the list element itself
        if len(path) >= 2 and path[-2].startswith("k:"):
            container = value_at(obj, path[:-2], lambda n: None)
            want = json.loads(path[-2][2:])
            if isinstance(container, list):
                container[:] = [
                    i
                    for i in container
                    if not (isinstance(i, dict) and all(i.get(k) == v for k, v in want.items()))
                ]
        return
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)


def merge_applied(live: Any, applied: Any, keys_for: KeyFn, names: tuple[str, ...] = ()) -> Any:
    """Merge an applied configuration into the live object (maps recurse, keyed lists merge)."""
    if isinstance(applied, dict) and isinstance(live, dict):
        out = dict(live)
        for key, value in applied.items():
            out[key] = merge_applied(live.get(key), value, keys_for, (*names, key))
        return out
    if isinstance(applied, list) and isinstance(live, list):
        keys = keys_for(names)
        if keys and all(_elem_key(i, keys) for i in applied) and all(_elem_key(i, keys) for i in live):
            out_list = list(live)
            for item in applied:
                ek = _elem_key(item, keys)
                idx = next((i for i, v in enumerate(out_list) if _elem_key(v, keys) == ek), None)
                if idx is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[idx] = merge_applied(out_list[idx], item, keys_for, names)
            return out_list
    return copy.deepcopy(applied)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entries(obj: Obj) -> list[Obj]:
    mf = (obj.get("metadata") or {}).get("managedFields")
    return [dict(e) for e in mf if isinstance(e, dict)] if isinstance(mf, list) else []


def _set_entries(obj: Obj, entries: list[Obj]) -> None:
    obj.setdefault("metadata", {})["managedFields"] = [e for e in entries if e.get("fieldsV1")] or None
    if obj["metadata"]["managedFields"] is None:
        del obj["metadata"]["managedFields"]


def _owned(entry: Obj) -> set[Path]:
    return from_fields_v1(entry.get("fieldsV1") or {})


def _strip_paths(entries: list[Obj], paths: set[Path], skip: Obj | None = None) -> None:
    for entry in entries:
        if entry is skip:
            continue
        owned = _owned(entry)
        if owned & paths:
            entry["fieldsV1"] = to_fields_v1(owned - paths)


def _upsert(
    entries: list[Obj], manager: str, operation: str, api_version: str, subresource: str, paths: set[Path]
) -> None:
    for entry in entries:
        if (
            entry.get("manager") == manager
            and entry.get("operation") == operation
            and entry.get("subresource", "") == subresource
        ):
            entry["fieldsV1"] = (
                to_fields_v1(_owned(entry) | paths) if operation == "Update" else to_fields_v1(paths)
            )
            entry["time"] = _now()
            entry["apiVersion"] = api_version
            return
    entry = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": _now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }
    if subresource:
        entry["subresource"] = subresource
    entries.append(entry)


def _changed(old: Any, new: Any, keys_for: KeyFn) -> set[Path]:
    old_paths = field_paths(old, keys_for) if isinstance(old, dict) else set()
    new_paths = field_paths(new, keys_for)
    return {
        p for p in new_paths if p not in old_paths or value_at(old, p, keys_for) != value_at(new, p, keys_for)
    }


def track_update(
    old: Obj | None, new: Obj, manager: str, api_version: str, subresource: str, keys_for: KeyFn
) -> None:
    """Record `manager` as owner of what this (non-apply) write changed, in place on new."""
    entries = _entries(old) if old is not None else []
    changed = _changed(old or {}, new, keys_for)
    if subresource == "status":
        changed = {p for p in changed if p and p[0] == "f:status"}
    elif subresource == "":
        changed = {p for p in changed if not (p and p[0] == "f:status")} if old is not None else changed
    if changed:
        _strip_paths(entries, changed)
        _upsert(entries, manager, "Update", api_version, subresource, changed)
    _set_entries(new, entries)


def apply(
    live: Obj | None,
    applied: Obj,
    manager: str,
    force: bool,
    api_version: str,
    keys_for: KeyFn,
    subresource: str = "",
) -> Obj:
    """The object after `manager` applies `applied`; raises ApplyConflict."""
    applied = copy.deepcopy(applied)
    applied.get("metadata", {}).pop("managedFields", None)
    applied_paths = field_paths(applied, keys_for)
    if live is None:
        result = applied
        entries: list[Obj] = []
        _upsert(entries, manager, "Apply", api_version, subresource, applied_paths)
        _set_entries(result, entries)
        return result
    entries = _entries(live)
    conflicts: list[tuple[str, str]] = []
    for entry in entries:
        if entry.get("manager") == manager:
            continue
        for path in _owned(entry) & applied_paths:
            if value_at(live, path, keys_for) != value_at(applied, path, keys_for):
                conflicts.append((str(entry.get("manager")), dotted(path)))
    if conflicts and not force:
        raise ApplyConflict(sorted(set(conflicts)))
    mine = next(
        (
            e
            for e in entries
            if e.get("manager") == manager
            and e.get("operation") == "Apply"
            and e.get("subresource", "") == subresource
        ),
        None,
    )
    previously = _owned(mine) if mine else set()
    result = merge_applied({k: v for k, v in live.items()}, applied, keys_for)
    result["metadata"] = merge_applied(
        live.get("metadata") or {}, applied.get("metadata") or {}, keys_for, ("metadata",)
    )
    others: set[Path] = set()
    for entry in entries:
        if entry is not mine:
            others |= _owned(entry)
    if force:
        _strip_paths(entries, applied_paths, skip=mine)
    for path in sorted(previously - applied_paths, key=len, reverse=True):
        if path not in others:
            remove_path(result, path)
    _upsert(entries, manager, "Apply", api_version, subresource, applied_paths)
    _set_entries(result, entries)
    return result
