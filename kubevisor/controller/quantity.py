"""Kubernetes resource quantities ("128Mi", "1G", "100m", "2") as exact numbers."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

_SUFFIX: dict[str, Fraction] = {
    "": Fraction(1),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_RE = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float) -> Fraction:
    """Exact value of a quantity; ValueError naming the bad text otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(Decimal(str(value)))
    text = value.strip()
    match = _RE.match(text)
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"invalid quantity {value!r}")
    number, suffix = match.groups()
    if suffix and "e" in number.lower():
        raise ValueError(f"invalid quantity {value!r}")
    try:
        return Fraction(Decimal(number)) * _SUFFIX[suffix]
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {value!r}") from exc


def to_bytes(value: str | int | float) -> int:
    """Memory quantities round up to whole bytes, as Kubernetes does."""
    q = parse_quantity(value)
    return -((-q.numerator) // q.denominator)


def to_millis(value: str | int | float) -> int:
    """CPU quantities in millicores, rounded up."""
    q = parse_quantity(value) * 1000
    return -((-q.numerator) // q.denominator)


def format_bytes(n: int) -> str:
    """The shortest exact binary-suffixed form: 290Mi, 426240Ki, 1000 (bytes)."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = int(_SUFFIX[suffix])
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def format_millis(m: int) -> str:
    return str(m // 1000) if m % 1000 == 0 else f"{m}m"
