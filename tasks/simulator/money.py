"""Decimal money: numbers parsed as PHP validates them, cent rounding, invoice totals and the text forms."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
HUNDRED = Decimal(100)
ZERO = Decimal(0)

# PHP's FILTER_VALIDATE_FLOAT: optional sign, digits with an optional fraction, optional exponent.
_FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def to_decimal(value: object) -> Decimal | None:
    """The number ``value`` holds, or None when PHP would not accept it as a float parameter."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # Only Python callers pass floats (JSON bodies are parsed to Decimal); str() gives the short form.
        return Decimal(str(value))
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return Decimal(value.strip())
    return None


def to_int(value: object) -> int | None:
    """A whole number ``value`` holds, or None (PHP's ``intval($v) == $v`` check)."""
    number = to_decimal(value)
    if number is None or number != number.to_integral_value():
        return None
    return int(number)


def cents(value: Decimal) -> Decimal:
    """Round to cents the way the ledger does: half up, never banker's rounding."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def amount_text(value: Decimal) -> str:
    """An amount as the API prints it: two decimals, ``"199.65"``."""
    rounded = cents(value)
    return "0.00" if rounded == 0 else f"{rounded:.2f}"


def number_text(value: Decimal) -> str:
    """A quantity, price or percentage as the API prints it: no trailing zeros, ``"12.5"``, ``"150"``."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def line_excl(number: Decimal, price_excl: Decimal, discount_percentage: Decimal = ZERO) -> Decimal:
    """Number × PriceExcl less the discount, each rounded to cents as getLineAmount does ("excl")."""
    gross = number * price_excl
    return cents(gross) - cents(gross * discount_percentage / HUNDRED)


def line_incl(
    number: Decimal, price_excl: Decimal, tax: Decimal, discount_percentage: Decimal = ZERO
) -> Decimal:
    """A line's amount with VAT when prices are read including it (functions.php::getLineAmount, "incl")."""
    gross = price_excl * (1 + tax / HUNDRED) * number
    return cents(gross) - cents(gross * discount_percentage / HUNDRED)


@dataclass(frozen=True)
class RateTotals:
    excl: Decimal
    tax: Decimal
    incl: Decimal


@dataclass(frozen=True)
class Totals:
    excl: Decimal
    tax: Decimal
    incl: Decimal
    by_rate: dict[Decimal, RateTotals]


def totals(
    lines: Iterable[tuple[Decimal, Decimal]], *, discount: Decimal = ZERO, vat_calc_method: str = "excl"
) -> Totals:
    """Totals from (line amount, tax percentage) pairs, as functions.php::calculateFinancialTotals makes them:
    per rate, the invoice's discount off the sum, then the tax rounded once. Line amounts are excl VAT, or
    incl with ``vat_calc_method`` "incl" (then the tax is taken out of the sum)."""
    per_rate: dict[Decimal, Decimal] = {}
    for amount, rate in lines:
        per_rate[rate] = per_rate.get(rate, ZERO) + amount
    by_rate: dict[Decimal, RateTotals] = {}
    for rate, amount in per_rate.items():
        amount = cents(amount - amount * discount / HUNDRED)
        if vat_calc_method == "incl":
            tax = cents(amount / (1 + rate / HUNDRED) * rate / HUNDRED)
            by_rate[rate] = RateTotals(amount - tax, tax, amount)
        else:
            tax = cents(amount * rate / HUNDRED)
            by_rate[rate] = RateTotals(amount, tax, amount + tax)
    excl_total = sum((r.excl for r in by_rate.values()), ZERO)
    tax_total = sum((r.tax for r in by_rate.values()), ZERO)
    return Totals(excl_total, tax_total, excl_total + tax_total, by_rate)
