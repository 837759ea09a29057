"""Kubernetes `resource.Quantity`: parsing and canonical formatting, exactly (no floats).

Grammar (as apimachinery's `ParseQuantity`): a signed decimal number followed by a suffix,
which is a binary SI suffix (Ki … Ei), a decimal SI suffix (n u m "" k M G T P E) or a
decimal exponent (`e3`, `E-2`). Values finer than 1n are rounded away from zero to 1n, as
Kubernetes does. The format of the suffix is remembered, and `str()` gives the canonical
form Kubernetes would print (`1.5Gi` → `1536Mi`, `0.5` → `500m`, `1000` → `1k`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

Format = Literal["BinarySI", "DecimalSI", "DecimalExponent"]

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_BY_EXP = {e: s for s, e in _DECIMAL.items()}
_BINARY_BY_BITS = {b: s for s, b in _BINARY.items()}

_NUMBER = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(.*)$")
_EXPONENT = re.compile(r"^[eE]([+-]?\d+)$")
_NANO = Fraction(1, 10**9)

QUANTITY_REGEX = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


@dataclass(frozen=True, order=False)
class Quantity:
    value: Fraction
    format: Format = "DecimalSI"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Quantity):
            return self.value == other.value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.value

    def __le__(self, other: Quantity) -> bool:
        return self.value <= other.value

    def __gt__(self, other: Quantity) -> bool:
        return self.value > other.value

    def __ge__(self, other: Quantity) -> bool:
        return self.value >= other.value

    def ceil(self) -> int:
        """The value rounded up to an integer (Kubernetes' `Quantity.Value()`)."""
        return math.ceil(self.value)

    def milli(self) -> int:
        """The value in thousandths, rounded up (Kubernetes' `MilliValue()`)."""
        return math.ceil(self.value * 1000)

    def is_zero(self) -> bool:
        return self.value == 0

    def __str__(self) -> str:
        return format_quantity(self.value, self.format)


def parse_quantity(text: str) -> Quantity:
    """Parse a quantity string; raise QuantityError with Kubernetes' wording on failure."""
    if not isinstance(text, str):
        raise QuantityError(f"quantities must be strings or integers, got {type(text).__name__}")
    m = _NUMBER.match(text)
    if not m or not text:
        raise QuantityError(f"quantities must match the regular expression '{QUANTITY_REGEX}'")
    sign, number, suffix = m.groups()
    if "." in number:
        whole, frac = number.split(".")
        mantissa = Fraction(int(whole or "0")) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)
    else:
        mantissa = Fraction(int(number))
    if sign == "-":
        mantissa = -mantissa

    fmt: Format
    if suffix in _BINARY:
        value, fmt = mantissa * 2 ** _BINARY[suffix], "BinarySI"
    elif suffix in _DECIMAL:
        value, fmt = mantissa * Fraction(10) ** _DECIMAL[suffix], "DecimalSI"
    elif (e := _EXPONENT.match(suffix)) is not None:
        value, fmt = mantissa * Fraction(10) ** int(e.group(1)), "DecimalExponent"
    else:
        raise QuantityError(f"unable to parse quantity's suffix: {suffix!r}")
    return Quantity(_round_to_nano(value), fmt)


def to_quantity(raw: object) -> Quantity:
    """A quantity from YAML/JSON: a string or a number (ints and floats as Kubernetes decodes them)."""
    if isinstance(raw, bool):
        raise QuantityError("quantities must be strings or numbers, got a boolean")
    if isinstance(raw, int):
        return Quantity(Fraction(raw), "DecimalSI")
    if isinstance(raw, float):
        return parse_quantity(repr(raw).replace("e+", "e"))
    if isinstance(raw, str):
        return parse_quantity(raw)
    raise QuantityError(f"quantities must be strings or numbers, got {type(raw).__name__}")


def _round_to_nano(value: Fraction) -> Fraction:
    scaled = value / _NANO
    if scaled.denominator == 1:
        return value
    rounded = math.ceil(scaled) if scaled > 0 else math.floor(scaled)  # away from zero
    return Fraction(rounded) * _NANO


def format_quantity(value: Fraction, fmt: Format) -> str:
    """Canonical Kubernetes string for `value` in `fmt`."""
    if value == 0:
        return "0"
    if fmt == "BinarySI" and value.denominator == 1 and abs(value) >= 1024:
        n = int(value)
        bits = 0
        while bits < 60 and n % (1 << (bits + 10)) == 0:
            bits += 10
        return f"{n >> bits}{_BINARY_BY_BITS.get(bits, '')}"
    # Decimal: the largest exponent (a multiple of 3) that keeps the mantissa an integer.
    exp = -9
    mantissa = value * 10**9
    assert mantissa.denominator == 1, "values are kept at nano precision"
    m = int(mantissa)
    limit = 18 if fmt != "DecimalExponent" else 10**6
    while exp < limit and m % 1000 == 0:
        m //= 1000
        exp += 3
    if fmt == "DecimalExponent":
        return f"{m}" if exp == 0 else f"{m}e{exp}"
    return f"{m}{_DECIMAL_BY_EXP[exp]}"
