"""Table output (pure): column definitions, a small Kubernetes JSONPath evaluator, human ages."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name automatically."
)
AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)


class JSONPathError(ValueError):
    pass


_TOKEN = re.compile(
    r"\.([A-Za-z0-9_\-$/]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*(==|!=)\s*"
    r"[\"']?([^\"'\)]*)[\"']?\)\]|\['([^']+)'\]"
)


def parse_jsonpath(path: str) -> list[tuple[str, Any]]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if text.startswith("$"):
        text = text[1:]
    if not text.startswith(".") and not text.startswith("["):
        text = "." + text
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise JSONPathError(f"invalid JSONPath {path!r} at {text[pos:]!r}")
        if m.group(1) is not None:
            steps.append(("field", m.group(1)))
        elif m.group(6) is not None:
            steps.append(("field", m.group(6)))
        elif m.group(2) is not None:
            steps.append(("index", m.group(2)))
        else:
            steps.append(("filter", (m.group(3).split("."), m.group(4), m.group(5))))
        pos = m.end()
    return steps


def eval_jsonpath(obj: Any, path: str) -> list[Any]:
    """All values the path selects; missing keys select nothing."""
    current = [obj]
    for kind, arg in parse_jsonpath(path):
        nxt: list[Any] = []
        for value in current:
            if kind == "field":
                if isinstance(value, dict) and arg in value:
                    nxt.append(value[arg])
            elif kind == "index":
                if isinstance(value, list):
                    if arg == "*":
                        nxt.extend(value)
                    elif int(arg) < len(value):
                        nxt.append(value[int(arg)])
                elif isinstance(value, dict) and arg == "*":
                    nxt.extend(value.values())
            else:
                fields, op, want = arg
                if isinstance(value, list):
                    for item in value:
                        got: Any = item
                        for f in fields:
                            got = got.get(f) if isinstance(got, dict) else None
                        if (str(got) == want if got is not None else False) == (op == "=="):
                            nxt.append(item)
        current = nxt
    return current


def parse_time(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        return None


def human_duration(seconds: float) -> str:
    """Like apimachinery duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y{d % 365}d" if d % 365 else f"{d // 365}y"


def age(timestamp: Any, now: dt.datetime | None = None) -> str:
    when = parse_time(timestamp) if isinstance(timestamp, str) else None
    if when is None:
        return "<unknown>"
    now = now or dt.datetime.now(dt.UTC)
    return human_duration((now - when).total_seconds())


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    getter: Callable[[Obj], Any]
    priority: int = 0
    format: str = ""
    description: str = ""

    def definition(self) -> Obj:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


def name_column() -> Column:
    return Column(
        "Name", "string", lambda o: o.get("metadata", {}).get("name", ""), 0, "name", NAME_DESCRIPTION
    )


def age_column() -> Column:
    return Column(
        "Age", "date", lambda o: age(o.get("metadata", {}).get("creationTimestamp")), 0, "", AGE_DESCRIPTION
    )


def jsonpath_column(
    name: str, typ: str, path: str, priority: int = 0, fmt: str = "", description: str = ""
) -> Column:
    """A CRD additionalPrinterColumn: computed server-side, dates rendered as ages."""
    parse_jsonpath(path)  # reject bad paths early

    def get(obj: Obj) -> Any:
        values = eval_jsonpath(obj, path)
        if not values:
            return None
        value = values[0] if len(values) == 1 else values
        if typ == "date":
            return age(value) if isinstance(value, str) else None
        if typ == "integer":
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        if typ == "number":
            return value if isinstance(value, int | float) and not isinstance(value, bool) else None
        if typ == "boolean":
            return value if isinstance(value, bool) else None
        if isinstance(value, dict | list):
            import json

            return json.dumps(value, separators=(",", ":"))
        return str(value) if not isinstance(value, bool) else str(value).lower()

    desc = description or f"Custom resource definition column (in JSONPath format): {path}"
    return Column(name, typ, get, priority, fmt, desc)


def partial_metadata(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def build_table(
    columns: list[Column], objects: list[Obj], include: str = "Metadata", list_meta: Obj | None = None
) -> Obj:
    rows = []
    for obj in objects:
        row: Obj = {"cells": [_safe(c, obj) for c in columns]}
        if include == "Object":
            row["object"] = obj
        elif include == "Metadata":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta or {},
        "columnDefinitions": [c.definition() for c in columns],
        "rows": rows,
    }


def _safe(column: Column, obj: Obj) -> Any:
    try:
        return column.getter(obj)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None
