"""Label and field selectors: parsing and matching (pure).

Label selector grammar as in apimachinery `labels.Parse`: comma-separated requirements,
each `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`. Field selectors
support `=`, `==`, `!=` on a fixed set of fields per kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


class SelectorError(ValueError):
    pass


_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # exists | !exists | = | != | in | notin
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # != and notin match when the key is absent, as upstream does
        return not present or labels[self.key] not in self.values


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            tokens.append(ch)
            i += 1
        elif text.startswith("==", i) or text.startswith("!=", i):
            tokens.append(text[i : i + 2])
            i += 2
        elif ch in "=!":
            tokens.append(ch)
            i += 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in "(),=!":
                j += 1
            tokens.append(text[i:j])
            i = j
    return tokens


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse a label selector string; raises SelectorError naming the bad part."""
    tokens = _tokenize(text)
    reqs: list[Requirement] = []
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    while pos < len(tokens):
        tok = tokens[pos]
        if tok == "!":
            pos += 1
            key = peek()
            if key is None or not _KEY.match(key):
                raise SelectorError(f"invalid label selector {text!r}: expected a key after '!'")
            pos += 1
            reqs.append(Requirement(key, "!exists"))
        else:
            if not _KEY.match(tok):
                raise SelectorError(f"invalid label selector {text!r}: invalid label key {tok!r}")
            key = tok
            pos += 1
            op = peek()
            if op is None or op == ",":
                reqs.append(Requirement(key, "exists"))
            elif op in ("=", "==", "!="):
                pos += 1
                value = peek()
                if value is None or value in ",()":
                    value = ""
                else:
                    pos += 1
                if not _VALUE.match(value) or len(value) > 63:
                    raise SelectorError(f"invalid label selector {text!r}: invalid value {value!r}")
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            elif op in ("in", "notin"):
                pos += 1
                if peek() != "(":
                    raise SelectorError(f"invalid label selector {text!r}: expected '(' after {op}")
                pos += 1
                values: list[str] = []
                while True:
                    value = peek()
                    if value is None:
                        raise SelectorError(f"invalid label selector {text!r}: unterminated '('")
                    if value == ")":
                        pos += 1
                        break
                    if value == ",":
                        pos += 1
                        continue
                    if not _VALUE.match(value):
                        raise SelectorError(f"invalid label selector {text!r}: invalid value {value!r}")
                    values.append(value)
                    pos += 1
                if not values and op == "in":
                    raise SelectorError(f"invalid label selector {text!r}: empty set for 'in'")
                reqs.append(Requirement(key, op, tuple(values)))
            else:
                raise SelectorError(f"invalid label selector {text!r}: unexpected {op!r}")
        nxt = peek()
        if nxt is not None:
            if nxt != ",":
                raise SelectorError(f"invalid label selector {text!r}: expected ',' before {nxt!r}")
            pos += 1
            if peek() is None:
                raise SelectorError(f"invalid label selector {text!r}: trailing ','")
    return reqs


def labels_match(reqs: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def selector_from_label_selector(sel: Mapping[str, Any]) -> list[Requirement]:
    """metav1.LabelSelector (matchLabels + matchExpressions) to requirements."""
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (sel.get("matchLabels") or {}).items()]
    for expr in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}.get(
            expr.get("operator", "")
        )
        if op is None:
            raise SelectorError(f"invalid matchExpressions operator {expr.get('operator')!r}")
        reqs.append(Requirement(str(expr.get("key", "")), op, tuple(expr.get("values") or ())))
    return reqs


def format_label_selector(sel: Mapping[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        op = expr.get("operator")
        vals = ",".join(expr.get("values") or [])
        if op == "In":
            parts.append(f"{expr['key']} in ({vals})")
        elif op == "NotIn":
            parts.append(f"{expr['key']} notin ({vals})")
        elif op == "Exists":
            parts.append(expr["key"])
        elif op == "DoesNotExist":
            parts.append(f"!{expr['key']}")
    return ",".join(parts)


# -- field selectors ---------------------------------------------------------------------

FieldGetter = Callable[[Obj], str]


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # = | !=
    value: str


def _unescape(value: str) -> str:
    return value.replace("\\,", ",").replace("\\=", "=").replace("\\\\", "\\")


def parse_field_selector(text: str, allowed: Mapping[str, FieldGetter]) -> list[FieldRequirement]:
    reqs: list[FieldRequirement] = []
    if not text.strip():
        return reqs
    for part in re.split(r"(?<!\\),", text):
        part = part.strip()
        m = re.match(r"^([^=!]+)(==|=|!=)(.*)$", part)
        if not m:
            raise SelectorError(f"invalid field selector {text!r}: invalid selector term {part!r}")
        field, op, value = m.group(1).strip(), m.group(2), _unescape(m.group(3))
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")
        reqs.append(FieldRequirement(field, "!=" if op == "!=" else "=", value))
    return reqs


def fields_match(reqs: list[FieldRequirement], obj: Obj, allowed: Mapping[str, FieldGetter]) -> bool:
    for req in reqs:
        got = allowed[req.field](obj)
        if (got == req.value) != (req.op == "="):
            return False
    return True


def path_getter(*path: str) -> FieldGetter:
    """A getter for a dotted path, rendering missing values as ''."""

    def get(obj: Obj) -> str:
        cur: Any = obj
        for part in path:
            if not isinstance(cur, dict):
                return ""
            cur = cur.get(part)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


METADATA_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": path_getter("metadata", "name"),
    "metadata.namespace": path_getter("metadata", "namespace"),
}
