"""Validation errors in the shape Kubernetes uses: StatusCause lists and a 422 `Status`.

A `Cause` is a `(field, message)` pair (it unpacks like a tuple) with a cause `type`
(`FieldValueInvalid`, `FieldValueRequired`, …). `ValidationError` carries all causes of one
object; `str()` is a single line naming the fields, `to_status()` the body kube-apiserver
returns for an invalid object.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FIELD_VALUE_INVALID = "FieldValueInvalid"
FIELD_VALUE_REQUIRED = "FieldValueRequired"
FIELD_VALUE_DUPLICATE = "FieldValueDuplicate"
FIELD_VALUE_NOT_SUPPORTED = "FieldValueNotSupported"
FIELD_VALUE_NOT_FOUND = "FieldValueNotFound"
FIELD_VALUE_FORBIDDEN = "FieldValueForbidden"
FIELD_VALUE_TOO_LONG = "FieldValueTooLong"
FIELD_UNKNOWN = "FieldValueUnknown"  # not a Kubernetes cause type: unknown fields are decode errors there


class Cause(tuple[str, str]):
    """One reason an object is invalid: `(field, message)` plus a Kubernetes cause type."""

    type: str

    def __new__(cls, field: str, message: str, type: str = FIELD_VALUE_INVALID) -> Cause:
        self = super().__new__(cls, (field, message))
        self.type = type
        return self

    @property
    def field(self) -> str:
        return self[0]

    @property
    def message(self) -> str:
        return self[1]

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "field": self.field}

    def __repr__(self) -> str:
        return f"Cause({self.field!r}, {self.message!r}, type={self.type!r})"


def _one_line(text: str) -> str:
    return " ".join(text.split())


class ValidationError(ValueError):
    """An object failed validation; `causes` lists every reason, in order of discovery."""

    def __init__(
        self,
        causes: Iterable[Cause | tuple[str, str]],
        *,
        kind: str = "VirtualMachineInstance",
        group: str = "kubevirt.io",
        name: str = "",
    ) -> None:
        self.causes: list[Cause] = [c if isinstance(c, Cause) else Cause(c[0], c[1]) for c in causes]
        if not self.causes:
            raise ValueError("a ValidationError needs at least one cause")
        self.kind = kind
        self.group = group
        self.name = name
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        for cause in self.causes:
            msg = _one_line(cause.message)
            # KubeVirt messages often name the field already; avoid saying it twice.
            parts.append(msg if cause.field and cause.field in msg else f"{cause.field}: {msg}")
        return "; ".join(parts)

    @property
    def fields(self) -> list[str]:
        return [c.field for c in self.causes]

    def to_status(self) -> dict[str, Any]:
        """The 422 `Status` kube-apiserver returns when an admission check rejects the object."""
        qualified = f"{self.kind}.{self.group}" if self.group else self.kind
        listed = ", ".join(
            f"{c.field}: {_one_line(c.message)}" if c.field else _one_line(c.message) for c in self.causes
        )
        if len(self.causes) > 1:
            listed = f"[{listed}]"  # as apimachinery's aggregate of field errors
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f'{qualified} "{self.name}" is invalid: {listed}',
            "reason": "Invalid",
            "details": {
                "name": self.name,
                "group": self.group,
                "kind": self.kind,
                "causes": [c.to_dict() for c in self.causes],
            },
            "code": 422,
        }
