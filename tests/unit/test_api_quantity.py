"""kubevisor.api.quantity: Kubernetes resource.Quantity semantics, exactly."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubevisor.api.quantity import Quantity, QuantityError, format_quantity, parse_quantity, to_quantity


@pytest.mark.parametrize(
    ("text", "value", "canonical"),
    [
        ("128Mi", 128 * 2**20, "128Mi"),
        ("1.5Gi", 3 * 2**29, "1536Mi"),
        ("2048Ki", 2 * 2**20, "2Mi"),
        ("0.5Ki", 512, "512"),
        ("1G", 10**9, "1G"),
        ("1000", 1000, "1k"),
        ("1k", 1000, "1k"),
        ("0.5", Fraction(1, 2), "500m"),
        ("100m", Fraction(1, 10), "100m"),
        ("1e3", 1000, "1e3"),
        ("1E3", 1000, "1e3"),
        ("1.5e-3", Fraction(3, 2000), "1500e-6"),
        ("1E", 10**18, "1E"),
        ("-1.5", Fraction(-3, 2), "-1500m"),
        ("0", 0, "0"),
        ("0.1n", Fraction(1, 10**9), "1n"),  # below nano precision: rounded up, as Kubernetes does
        (".5", Fraction(1, 2), "500m"),
        ("+7", 7, "7"),
    ],
)
def test_parse_and_canonical_form(text, value, canonical):
    q = parse_quantity(text)
    assert q.value == Fraction(value)
    assert str(q) == canonical


@pytest.mark.parametrize(
    "text", ["12XB", "", "Mi", "1..5", "1.5.5Gi", "1 Gi", "1Gi ", "1gi", "1KiB", "e3", "1e", "--1"]
)
def test_invalid_quantities_are_errors(text):
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_numbers_from_yaml():
    assert to_quantity(1024).value == 1024
    assert to_quantity(0.5).value == Fraction(1, 2)
    with pytest.raises(QuantityError):
        to_quantity(True)
    with pytest.raises(QuantityError):
        to_quantity(None)


def test_comparisons_and_rounding():
    assert parse_quantity("1Gi") > parse_quantity("1G")
    assert parse_quantity("1000M") == parse_quantity("1G")
    assert parse_quantity("500m").ceil() == 1
    assert parse_quantity("1.2").milli() == 1200


_suffixes = st.sampled_from(
    ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
)


@st.composite
def quantity_strings(draw):
    sign = draw(st.sampled_from(["", "-", "+"]))
    whole = draw(st.integers(min_value=0, max_value=10**6))
    frac = draw(st.one_of(st.just(""), st.integers(min_value=0, max_value=999).map(lambda f: f".{f}")))
    suffix = draw(st.one_of(_suffixes, st.integers(min_value=-12, max_value=21).map(lambda e: f"e{e}")))
    return f"{sign}{whole}{frac}{suffix}"


@given(quantity_strings())
def test_canonical_form_round_trips(text):
    q = parse_quantity(text)
    again = parse_quantity(str(q))
    assert again.value == q.value
    assert str(again) == str(q)  # canonical form is a fixed point


@given(
    st.integers(min_value=-(10**15), max_value=10**15),
    st.sampled_from(["BinarySI", "DecimalSI", "DecimalExponent"]),
)
def test_integer_values_round_trip_in_every_format(n, fmt):
    text = format_quantity(Fraction(n), fmt)
    assert parse_quantity(text).value == n


@given(st.integers(min_value=1, max_value=2**40), st.sampled_from([10, 20, 30, 40]))
def test_binary_values_keep_binary_suffixes(n, bits):
    q = Quantity(Fraction(n * 2**bits), "BinarySI")
    text = str(q)
    assert text[-2:] in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
    assert parse_quantity(text) == q
