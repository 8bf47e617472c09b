"""Kubernetes resource quantities (``250m``, ``1Gi``, ``1e3``) parsed exactly, as the API server reads them.

The grammar is apimachinery's ``resource.Quantity``::

    <quantity> ::= <sign>? <number> <suffix>
    <number>   ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>   ::= <binarySI> | <decimalSI> | (e | E) <sign>? <digits>
    binarySI   ::= Ki | Mi | Gi | Ti | Pi | Ei
    decimalSI  ::= n | u | m | "" | k | M | G | T | P | E

Values are returned as :class:`fractions.Fraction` so ``0.1`` CPUs is exactly 100 millicores. Like kube, no
surrounding whitespace is accepted, ``K`` (upper case) is not a suffix, and ``1E`` is one exa while ``1E3`` is
one thousand.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["QuantityError", "cpu_millis", "memory_bytes", "parse_quantity"]

_BINARY_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_DECIMAL_SUFFIXES = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
# The exponent alternative comes before the bare "E" suffix so "1E3" is a thousand; backtracking makes "1E" exa.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE]?)"
)
# Exponents far beyond any real quantity would make Fraction arithmetic arbitrarily expensive.
_MAX_EXPONENT = 1000


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity; the message names the value."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        super().__init__(f"invalid quantity {value!r}: {reason}")


def parse_quantity(value: str | int | float) -> Fraction:
    """Parse a quantity exactly: ``"250m"`` → 1/4, ``"1Gi"`` → 1073741824, ``"1e-3"`` → 1/1000.

    Integers and finite floats are accepted as plain numbers (a float by its shortest decimal form, so ``0.1`` is
    exactly 1/10). Anything else raises :class:`QuantityError`.
    """
    if isinstance(value, bool):
        raise QuantityError(value, "a boolean is not a quantity")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(value, "must be a finite number")
        return Fraction(repr(value))
    if not isinstance(value, str):
        raise QuantityError(value, f"expected a string or a number, got {type(value).__name__}")
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise QuantityError(value, "expected a number with an optional suffix, e.g. 250m, 1Gi, 1e3")
    number = Fraction(match["number"])
    suffix = match["suffix"]
    if suffix in _BINARY_SUFFIXES:
        return number * _BINARY_SUFFIXES[suffix]
    if suffix in _DECIMAL_SUFFIXES:
        return number * _DECIMAL_SUFFIXES[suffix]
    exponent = int(suffix[1:])
    if abs(exponent) > _MAX_EXPONENT:
        raise QuantityError(value, f"exponent out of range (|e| <= {_MAX_EXPONENT})")
    return number * Fraction(10) ** exponent


def cpu_millis(value: str | int | float) -> int:
    """CPU in millicores, rounded up like kube's ``MilliValue()``: ``"0.5"`` → 500, ``"1n"`` → 1."""
    return math.ceil(parse_quantity(value) * 1000)


def memory_bytes(value: str | int | float) -> int:
    """Memory (or any byte quantity) in bytes, rounded up: ``"1Gi"`` → 1073741824, ``"1.5k"`` → 1500."""
    return math.ceil(parse_quantity(value))
