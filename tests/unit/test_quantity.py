"""Kubernetes quantities parse exactly, round up like kube, and reject garbage by name."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest

from localsched.quantity import QuantityError, cpu_millis, memory_bytes, parse_quantity


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("0", Fraction(0), id="zero"),
        pytest.param("1", Fraction(1), id="plain-integer"),
        pytest.param("1.5", Fraction(3, 2), id="plain-decimal"),
        pytest.param(".5", Fraction(1, 2), id="leading-dot"),
        pytest.param("5.", Fraction(5), id="trailing-dot"),
        pytest.param("+2", Fraction(2), id="plus-sign"),
        pytest.param("-2", Fraction(-2), id="minus-sign"),
        pytest.param("-250m", Fraction(-1, 4), id="negative-with-suffix"),
        pytest.param("5n", Fraction(5, 10**9), id="nano"),
        pytest.param("5u", Fraction(5, 10**6), id="micro"),
        pytest.param("250m", Fraction(1, 4), id="milli"),
        pytest.param("2k", Fraction(2000), id="kilo"),
        pytest.param("2M", Fraction(2 * 10**6), id="mega"),
        pytest.param("2G", Fraction(2 * 10**9), id="giga"),
        pytest.param("2T", Fraction(2 * 10**12), id="tera"),
        pytest.param("2P", Fraction(2 * 10**15), id="peta"),
        pytest.param("2E", Fraction(2 * 10**18), id="exa-is-a-suffix-without-digits"),
        pytest.param("1Ki", Fraction(1024), id="kibi"),
        pytest.param("1Mi", Fraction(2**20), id="mebi"),
        pytest.param("1Gi", Fraction(2**30), id="gibi"),
        pytest.param("1Ti", Fraction(2**40), id="tebi"),
        pytest.param("1Pi", Fraction(2**50), id="pebi"),
        pytest.param("1Ei", Fraction(2**60), id="exbi"),
        pytest.param("1.5Gi", Fraction(3 * 2**29), id="decimal-with-binary-suffix"),
        pytest.param("1e3", Fraction(1000), id="lowercase-exponent"),
        pytest.param("1E3", Fraction(1000), id="uppercase-exponent-is-not-exa"),
        pytest.param("1E-3", Fraction(1, 1000), id="negative-exponent"),
        pytest.param("1e+3", Fraction(1000), id="explicit-positive-exponent"),
        pytest.param("2.5e2", Fraction(250), id="decimal-with-exponent"),
        pytest.param("0.1", Fraction(1, 10), id="tenth-is-exact"),
        pytest.param(3, Fraction(3), id="int"),
        pytest.param(0.1, Fraction(1, 10), id="float-by-its-decimal-form"),
    ],
)
def test_parse_quantity_reads_kube_notation_exactly(value: str | int | float, expected: Fraction) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("abc", id="letters"),
        pytest.param("1K", id="uppercase-k-is-not-a-suffix"),
        pytest.param("1ki", id="lowercase-binary-suffix"),
        pytest.param("1e", id="exponent-without-digits"),
        pytest.param("1e1.5", id="fractional-exponent"),
        pytest.param("1.2.3", id="two-dots"),
        pytest.param(".", id="lone-dot"),
        pytest.param("-", id="lone-sign"),
        pytest.param("Mi", id="suffix-without-number"),
        pytest.param(" 1", id="leading-space"),
        pytest.param("1 ", id="trailing-space"),
        pytest.param("1 Gi", id="space-before-suffix"),
        pytest.param("1Gi1", id="trailing-digits"),
        pytest.param("1mm", id="two-suffixes"),
        pytest.param("1_000", id="underscore"),
        pytest.param("1e99999", id="absurd-exponent"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinity"),
        pytest.param(True, id="boolean"),
        pytest.param(None, id="none"),
    ],
)
def test_parse_quantity_rejects_garbage_naming_the_value(value: object) -> None:
    with pytest.raises(QuantityError) as caught:
        parse_quantity(value)  # type: ignore[arg-type]
    assert repr(value) in str(caught.value)
    assert caught.value.value is value


def test_quantity_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid quantity 'abc'"):
        parse_quantity("abc")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("250m", 250, id="millicores"),
        pytest.param("1", 1000, id="one-core"),
        pytest.param("0.5", 500, id="half-core"),
        pytest.param("1.2345", 1235, id="sub-milli-rounds-up"),
        pytest.param("1n", 1, id="one-nanocore-is-one-millicore"),
        pytest.param("100u", 1, id="microcores-round-up"),
        pytest.param("0", 0, id="zero"),
        pytest.param(2, 2000, id="int-cores"),
        pytest.param("1e-3", 1, id="exponent"),
    ],
)
def test_cpu_millis_rounds_up_to_millicores_like_kube(value: str | int, expected: int) -> None:
    assert cpu_millis(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1Gi", 1073741824, id="gibibyte"),
        pytest.param("128Mi", 134217728, id="mebibytes"),
        pytest.param("1G", 10**9, id="gigabyte"),
        pytest.param("1.5k", 1500, id="decimal-kilo"),
        pytest.param("1500m", 2, id="millibytes-round-up"),
        pytest.param("0.5Ki", 512, id="half-kibibyte"),
        pytest.param(1024, 1024, id="int-bytes"),
    ],
)
def test_memory_bytes_rounds_up_to_whole_bytes(value: str | int, expected: int) -> None:
    assert memory_bytes(value) == expected


@pytest.mark.parametrize("convert", [pytest.param(cpu_millis, id="cpu"), pytest.param(memory_bytes, id="memory")])
def test_conversions_reject_garbage_with_quantity_error(convert: Callable[[str], int]) -> None:
    with pytest.raises(QuantityError, match="'12x'"):
        convert("12x")
