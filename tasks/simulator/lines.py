"""Lines of sales and purchase invoices: new and edited lines from params, and the totals they make."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal

from tasks.simulator.envelope import ApiFailure, Record
from tasks.simulator.money import HUNDRED, ZERO, Totals, line_excl, number_text, totals
from tasks.simulator.store import Store

LineKind = Literal["sales", "purchase"]

# The administration's standard VAT rate, used when a line names none.
DEFAULT_TAX = Decimal(21)
# WeFact's VAT codes: V<rate> on sales, I<rate> on purchases ("V21", "I9").
_TAX_PREFIX: dict[LineKind, str] = {"sales": "V", "purchase": "I"}
_TAX_CODE = re.compile(r"[VvIi](\d+(?:\.\d+)?)")


def new_line(store: Store, kind: LineKind, given: Mapping[str, Any], *, default_date: str) -> Record:
    """A line with the defaults HostFact fills in, then the given fields."""
    wefact = store.dialect == "wefact"
    line: Record
    if kind == "sales":
        line = {
            "Identifier": store.new_id("invoicelines"),
            "Date": default_date,
            "Number": Decimal(1),
            "NumberSuffix": "",
            "ProductCode": "",
            "Description": "",
            "PriceExcl": ZERO,
            "DiscountPercentage": ZERO,
            "DiscountPercentageType": "line",
            "TaxPercentage": DEFAULT_TAX,
            "PeriodicID": 0,
            "Periods": 1,
            "Periodic": "",
            "StartPeriod": "",
            "EndPeriod": "",
            "ProductType": "",
            "Reference": 0,
        }
        if wefact:
            line.update({"TaxCode": "V21", "StartDate": "", "EndDate": ""})
    else:
        line = {
            "Identifier": store.new_id("creditinvoicelines"),
            "Number": Decimal(1),
            "Description": "",
            "PriceExcl": ZERO,
            "TaxPercentage": DEFAULT_TAX,
        }
        if wefact:
            line.update({"TaxCode": "I21", "CostCategory": "", "StartDate": "", "EndDate": ""})
    update_line(store, kind, line, given)
    return line


def update_line(store: Store, kind: LineKind, line: Record, given: Mapping[str, Any]) -> None:
    """Apply the given (already typed) fields to a line; only given fields change."""
    for key, value in given.items():
        if key == "Identifier" or (key == "Date" and value == ""):
            continue
        line[key] = value
    if store.dialect == "wefact":
        # WeFact takes VAT by code; a bare percentage still gets the matching code so output carries both.
        if "TaxCode" in given:
            match = _TAX_CODE.fullmatch(str(given["TaxCode"]).strip())
            if match is None:
                raise ApiFailure(f"Invalid TaxCode '{given['TaxCode']}'")
            line["TaxPercentage"] = Decimal(match.group(1))
            line["TaxCode"] = str(given["TaxCode"]).strip().upper()
        elif "TaxPercentage" in given:
            line["TaxCode"] = _TAX_PREFIX[kind] + number_text(line["TaxPercentage"])
    tax = line["TaxPercentage"]
    if not ZERO <= tax <= HUNDRED:
        raise ApiFailure("The tax percentage of an invoice line should lie between 0% and 100%.")
    discount = line.get("DiscountPercentage", ZERO)
    if not ZERO <= discount <= HUNDRED:
        raise ApiFailure("The discount percentage of an invoice line needs to be between 0% and 100%")


def apply_lines(
    store: Store,
    kind: LineKind,
    record: Record,
    given_lines: Iterable[Mapping[str, Any]],
    *,
    owners: Iterable[Record],
    default_date: str,
) -> int:
    """Edit lines that carry an Identifier, add the others; returns how many lines were added."""
    added = 0
    lines: list[Record] = record["InvoiceLines"]
    for given in given_lines:
        if "Identifier" not in given:
            lines.append(new_line(store, kind, given, default_date=default_date))
            added += 1
            continue
        line_id = given["Identifier"]
        line = next((line for line in lines if line["Identifier"] == line_id), None)
        if line is None:
            raise ApiFailure(_foreign_line_error(kind, line_id, owners))
        update_line(store, kind, line, given)
    recompute(record, kind)
    return added


def _foreign_line_error(kind: LineKind, line_id: int, owners: Iterable[Record]) -> str:
    for owner in owners:
        if any(line["Identifier"] == line_id for line in owner["InvoiceLines"]):
            if kind == "sales":
                code = owner["InvoiceCode"]
                return f"Invoice line {line_id} cannot be edited, because it belongs to invoice {code}"
            return (
                f"Invoice line {line_id} cannot be edited, because this invoice line belongs to "
                f"purchasing invoice '{owner['CreditInvoiceCode']}'."
            )
    return f"No invoice line found with identifier '{line_id}'"


def line_amount(kind: LineKind, line: Record) -> Decimal:
    discount = line.get("DiscountPercentage", ZERO) if kind == "sales" else ZERO
    return line_excl(line["Number"], line["PriceExcl"], discount)


def line_totals(kind: LineKind, lines: Iterable[Record]) -> Totals:
    return totals((line_amount(kind, line), line["TaxPercentage"]) for line in lines)


def recompute(record: Record, kind: LineKind) -> None:
    """AmountExcl/AmountTax/AmountIncl from the lines: the API treats them as read-only."""
    result = line_totals(kind, record["InvoiceLines"])
    record["AmountExcl"] = result.excl
    record["AmountTax"] = result.tax
    record["AmountIncl"] = result.incl
