"""Lines of sales and purchase invoices: new and edited lines from params, and the totals they make."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

from tasks.simulator.envelope import ApiFailure, Record
from tasks.simulator.money import HUNDRED, ZERO, Totals, line_excl, line_incl, number_text, totals
from tasks.simulator.store import EU_COUNTRIES, Store

LineKind = Literal["sales", "purchase"]

# The administration's standard VAT rate, used when a line names none.
DEFAULT_TAX = Decimal(21)
# WeFact's VAT codes: V<rate> on sales, I<rate> on purchases ("V21", "I9").
_TAX_PREFIX: dict[LineKind, str] = {"sales": "V", "purchase": "I"}
_TAX_CODE = re.compile(r"[VvIi](\d+(?:\.\d+)?)")


def debtor_rate(store: Store, debtor: Mapping[str, Any] | None, rate: Decimal) -> Decimal:
    """The VAT rate a new line for ``debtor`` gets: config.php::btwcheck, run by invoiceelement::add. WeFact
    takes a line's VAT by its code and documents no rule that overrides it."""
    if debtor is None or store.dialect == "wefact":
        return rate
    taxable = debtor.get("Taxable", "auto")
    if taxable == "no":
        return ZERO
    if taxable == "yes" or not store.rules.vat:
        return rate
    country = str(debtor.get("Country") or "NL")
    if country == "NL":
        return rate
    if country not in EU_COUNTRIES or (debtor.get("CompanyName") and debtor.get("TaxNumber")):
        return ZERO
    return rate


def new_line(
    store: Store,
    kind: LineKind,
    given: Mapping[str, Any],
    *,
    default_date: str,
    debtor: Mapping[str, Any] | None = None,
) -> Record:
    """A line with the defaults HostFact fills in, then the given fields; a sales line for ``debtor`` gets
    the VAT rate the administration's tax rules give it."""
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
    if kind == "sales" and line["Periodic"] and not line["PeriodicID"]:
        # invoiceelement::add: a new line with a period unit becomes a subscription that bills again from
        # the day after its period ends.
        subscription_id = store.new_id("subscriptions")
        store.subscriptions[subscription_id] = {
            "Identifier": subscription_id,
            "Description": line["Description"],
            "PriceExcl": line["PriceExcl"],
            "Periods": line["Periods"],
            "Periodic": line["Periodic"],
            "StartPeriod": line["EndPeriod"],
        }
        line["PeriodicID"] = subscription_id
    if kind == "sales":
        rate = debtor_rate(store, debtor, line["TaxPercentage"])
        if rate != line["TaxPercentage"]:
            update_line(store, kind, line, {"TaxPercentage": rate})
    return line


# HostFact's period units (Periodic): days, weeks, months, quarters (k), half years, years (j), two years.
_UNIT_MONTHS = {"m": 1, "k": 3, "h": 6, "j": 12, "t": 24}
_UNIT_DAYS = {"d": 1, "w": 7}


def end_period(start: str, periods: int, unit: str) -> str:
    """The last day a subscription line bills for."""
    day = date.fromisoformat(start[:10])
    if unit in _UNIT_DAYS:
        return (day + timedelta(days=_UNIT_DAYS[unit] * periods - 1)).isoformat()
    months = day.month - 1 + _UNIT_MONTHS.get(unit, 1) * periods
    year, month = day.year + months // 12, months % 12 + 1
    following = date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
    return (following - timedelta(days=1)).isoformat()


def update_line(store: Store, kind: LineKind, line: Record, given: Mapping[str, Any]) -> None:
    """Apply the given (already typed) fields to a line; only given fields change."""
    for key, value in given.items():
        if key in ("Identifier", "PeriodicType") or (key == "Date" and value == ""):
            continue
        line[key] = value
    if kind == "sales":
        # invoice_api_controller::_updateInvoiceLines: Periods, Periodic and StartPeriod count only with
        # PeriodicType "period" (a line being edited keeps being one while it has a PeriodicID); every
        # other line is one period, without a unit.
        periodic = given.get("PeriodicType", "period" if line.get("PeriodicID") else "once") == "period"
        if periodic and line.get("Periodic"):
            # WeFact takes a period's start as StartDate (its invoiceline add documentation).
            start = given.get("StartDate") if store.dialect == "wefact" else None
            line["StartPeriod"] = start or line.get("StartPeriod") or store.today()
            line["Periods"] = max(1, int(line.get("Periods") or 1))
            line["EndPeriod"] = end_period(line["StartPeriod"], line["Periods"], line["Periodic"])
        else:
            line.update({"Periods": 1, "Periodic": "", "StartPeriod": "", "EndPeriod": ""})
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
    debtor: Mapping[str, Any] | None = None,
) -> int:
    """Edit lines that carry an Identifier, add the others; returns how many lines were added."""
    added = 0
    lines: list[Record] = record["InvoiceLines"]
    for given in given_lines:
        if "Identifier" not in given:
            lines.append(new_line(store, kind, given, default_date=default_date, debtor=debtor))
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


def line_amount(kind: LineKind, line: Record, vat_calc_method: str = "excl") -> Decimal:
    """A line's amount: excl VAT, or incl with ``vat_calc_method`` "incl" (functions.php::getLineAmount).
    Purchase lines are Number × PriceExcl."""
    if kind == "purchase":
        return line_excl(line["Number"], line["PriceExcl"])
    price = line["PriceExcl"] * (line.get("Periods") or 1)
    discount = line.get("DiscountPercentage", ZERO)
    if vat_calc_method == "incl":
        return line_incl(line["Number"], price, line["TaxPercentage"], discount)
    return line_excl(line["Number"], price, discount)


def line_totals(kind: LineKind, lines: Iterable[Record], record: Record | None = None) -> Totals:
    method = str(record.get("VatCalcMethod") or "excl") if record is not None and kind == "sales" else "excl"
    discount = record.get("Discount", ZERO) if record is not None and kind == "sales" else ZERO
    return totals(
        ((line_amount(kind, line, method), line["TaxPercentage"]) for line in lines),
        discount=discount,
        vat_calc_method=method,
    )


def recompute(record: Record, kind: LineKind) -> None:
    """AmountExcl/AmountTax/AmountIncl from the lines: the API treats them as read-only."""
    result = line_totals(kind, record["InvoiceLines"], record)
    record["AmountExcl"] = result.excl
    record["AmountTax"] = result.tax
    record["AmountIncl"] = result.incl
