"""Label selectors and node selector terms, evaluated as the apiserver and scheduler do."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


class SelectorError(ValueError):
    pass


def _requirement_matches(labels: dict[str, str], key: str, op: str, values: list[str]) -> bool:
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    raise SelectorError(f"unknown operator {op!r}")


def label_selector_matches(selector: Obj | None, labels: dict[str, str] | None) -> bool:
    """metav1.LabelSelector semantics; an empty selector matches everything, None nothing."""
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        if not _requirement_matches(labels, expr["key"], expr["operator"], list(expr.get("values") or [])):
            return False
    return True


def label_selector_string(selector: Obj | None) -> str:
    """The `labelSelector` query/status string form (a=b,c in (d,e),!f)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def node_selector_term_matches(term: Obj, node: Obj) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no objects
    for expr in exprs:
        if not _requirement_matches(labels, expr["key"], expr["operator"], list(expr.get("values") or [])):
            return False
    node_fields = {"metadata.name": str((node.get("metadata") or {}).get("name") or "")}
    for expr in fields:
        if not _requirement_matches(
            node_fields, expr["key"], expr["operator"], list(expr.get("values") or [])
        ):
            return False
    return True


def node_matches_pod_affinity(pod_spec: Obj, node: Obj) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution node affinity."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required:
        terms = required.get("nodeSelectorTerms") or []
        # Terms are ORed; expressions within a term are ANDed.
        if not any(node_selector_term_matches(term, node) for term in terms):
            return False
    return True
