"""Stored records to the wire: which fields each dialect shows in show and list, all scalars as strings."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from tasks.protocol import Dialect
from tasks.simulator.envelope import Record
from tasks.simulator.lines import line_amount, line_totals
from tasks.simulator.money import HUNDRED, ZERO, amount_text, cents, number_text
from tasks.simulator.store import add_days

INVOICE_STATUS_LABELS = {
    0: "Draft",
    1: "Queue",
    2: "Sent",
    3: "Partly paid",
    4: "Paid",
    8: "Credit invoice",
    9: "Cancelled",
}
CREDITINVOICE_STATUS_LABELS = {
    0: "Not yet received",
    1: "Not yet paid",
    2: "Partly paid",
    3: "Paid",
    8: "Credit invoice",
    9: "Cancelled",
}

_AMOUNTS = frozenset(
    {"AmountExcl", "AmountTax", "AmountIncl", "AmountPaid", "AmountOutstanding", "AmountOpen", "PartPayment"}
)
_AMOUNTS_CREDITINVOICE = _AMOUNTS | {"Private"}

_HF_INVOICE = (
    "Identifier InvoiceCode Debtor DebtorCode Status SubStatus Date Term PayBefore PaymentURL AmountExcl "
    "AmountTax AmountIncl TaxRate Compound AmountPaid Discount VatCalcMethod IgnoreDiscount Coupon "
    "ReferenceNumber CompanyName TaxNumber Sex Initials SurName Address ZipCode City Country EmailAddress "
    "InvoiceMethod Template ScheduledAt SentDate Sent Reminders ReminderDate Summations SummationDate "
    "Authorisation PaymentMethod PayDate TransactionID Description Comment InvoiceLines Created Modified"
).split()
_WF_INVOICE = (
    "Identifier InvoiceCode Debtor DebtorCode Status SubStatus PaymentPausedEndDate PaymentPausedReason Date "
    "Term PayBefore PaymentURL AmountExcl AmountTax AmountIncl AmountPaid AmountOutstanding Discount "
    "VatCalcMethod IgnoreDiscount ReferenceNumber CompanyName Initials SurName Sex Address ZipCode City "
    "Country EmailAddress ExtraClientContactId InvoiceMethod ScheduledAt SentDate Sent Reminders "
    "ReminderDate "
    "Summations SummationDate Authorisation PaymentMethod PayDate TransactionID LanguageCode Currency "
    "Description Comment InvoiceLines Created Modified VatShift"
).split()
_HF_LINE = (
    "Identifier Date Number NumberSuffix ProductCode Description PriceExcl DiscountPercentage "
    "DiscountPercentageType TaxPercentage PeriodicID Periods Periodic StartPeriod EndPeriod ProductType "
    "Reference"
).split()
_WF_LINE = (
    "Identifier Date Number NumberSuffix ProductCode Description PriceExcl DiscountPercentage "
    "DiscountPercentageType TaxCode TaxPercentage PeriodicID Periods Periodic StartDate EndDate StartPeriod "
    "EndPeriod"
).split()
_HF_INVOICE_ROW = (
    "Identifier InvoiceCode Debtor DebtorCode CompanyName Initials SurName AmountExcl AmountIncl AmountOpen "
    "Date Status SubStatus Authorisation Modified"
).split()
_WF_INVOICE_ROW = (
    "Identifier InvoiceCode Debtor DebtorCode CompanyName Initials SurName AmountExcl AmountIncl AmountPaid "
    "AmountOutstanding Date PayBefore Status SubStatus Authorisation Modified"
).split()

_HF_CREDITINVOICE = (
    "Identifier CreditInvoiceCode InvoiceCode Creditor CreditorCode Status Date Term AmountExcl AmountIncl "
    "AmountPaid Authorisation Private PrivatePercentage ReferenceNumber PayDate InvoiceLines Created Modified"
).split()
_WF_CREDITINVOICE = (
    "Identifier CreditInvoiceCode InvoiceCode Creditor CreditorCode Status SubStatus Date Term AmountExcl "
    "AmountTax AmountIncl AmountPaid AmountOutstanding PaymentMethod Currency Authorisation "
    "AuthorisationStatus PayDate Comment InvoiceLines Created Modified"
).split()
_HF_CREDITINVOICE_LINE = "Identifier Number Description PriceExcl TaxPercentage".split()
_WF_CREDITINVOICE_LINE = (
    "Identifier Number Description PriceExcl TaxCode TaxPercentage CostCategory StartDate EndDate".split()
)
_HF_CREDITINVOICE_ROW = (
    "Identifier CreditInvoiceCode InvoiceCode Creditor CompanyName Initials SurName Date AmountExcl "
    "AmountIncl PartPayment Term Authorisation PayDate PayBefore Status Modified"
).split()
_WF_CREDITINVOICE_ROW = (
    "Identifier CreditInvoiceCode InvoiceCode Creditor CompanyName Initials SurName Date AmountExcl "
    "AmountIncl AmountPaid AmountOutstanding Term Authorisation PayDate PayBefore Status Comment Modified"
).split()

_DEBTOR_ROW = "Identifier DebtorCode CompanyName Initials SurName EmailAddress Modified".split()
_CREDITOR_ROW = "Identifier CreditorCode CompanyName Initials SurName EmailAddress Modified".split()


def scalar(value: Any) -> Any:
    """The API's string form of a stored value; containers keep their shape."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return number_text(value)
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): scalar(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scalar(item) for item in value]
    return str(value)


def _pick(values: Mapping[str, Any], order: list[str], amounts: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in order:
        if key not in values:
            continue
        value = values[key]
        out[key] = amount_text(value) if key in amounts and isinstance(value, Decimal) else scalar(value)
    return out


# -- invoices ------------------------------------------------------------------------------------------------


def invoice_open_amount(record: Record) -> Decimal:
    """HostFact list's AmountOpen: the full amount when sent, the rest when partly paid, else 0."""
    status = record["Status"]
    if status == 2:
        amount: Decimal = record["AmountIncl"]
        return amount
    if status == 3:
        rest: Decimal = record["AmountIncl"] - record["AmountPaid"]
        return rest
    return ZERO


def invoice_outstanding(record: Record) -> Decimal:
    """WeFact's AmountOutstanding: what is still to be paid; nothing once paid, credited or cancelled."""
    if record["Status"] in (4, 8, 9):
        return ZERO
    outstanding: Decimal = record["AmountIncl"] - record["AmountPaid"]
    return outstanding


def _payment_url(record: Record) -> str:
    if record["Status"] not in (2, 3):
        return ""
    key = hashlib.md5(
        f"{record['Identifier']}:{record['InvoiceCode']}".encode(), usedforsecurity=False
    ).hexdigest()
    return f"https://pay.simulator.invalid/?payment={record['InvoiceCode']}&key={key}"


def _sales_line(dialect: Dialect, line: Record) -> dict[str, Any]:
    if dialect == "wefact":
        return _pick(line, _WF_LINE, frozenset())
    out = _pick(line, _HF_LINE, frozenset())
    # HostFact keeps both as FLOAT fractions and prints them times 100 as PHP floats: 7 % is
    # 7.000000000000001 on the wire (invoice_api_controller::_show_invoice).
    for key in ("TaxPercentage", "DiscountPercentage"):
        out[key] = float(number_text(line[key] / HUNDRED)) * 100
    no_discount_excl = cents(line["Number"] * line["PriceExcl"] * (line.get("Periods") or 1))
    factor = (HUNDRED + line["TaxPercentage"]) / HUNDRED
    discount_excl = no_discount_excl - line_amount("sales", line)
    out["NoDiscountAmountIncl"] = number_text(cents(no_discount_excl * factor))
    out["NoDiscountAmountExcl"] = number_text(no_discount_excl)
    out["DiscountAmountIncl"] = number_text(cents(discount_excl * factor))
    out["DiscountAmountExcl"] = number_text(discount_excl)
    return out


def invoice_show(dialect: Dialect, record: Record) -> dict[str, Any]:
    """The ``invoice`` object of show/add/edit/partpayment/credit."""
    draft = record["Status"] == 0
    values = dict(record)
    values["PayBefore"] = add_days(record["Date"], record["Term"])
    values["PaymentURL"] = _payment_url(record)
    values["InvoiceLines"] = [_sales_line(dialect, line) for line in record["InvoiceLines"]]
    if dialect == "wefact":
        values["AmountOutstanding"] = invoice_outstanding(record)
        out = _pick(values, _WF_INVOICE, _AMOUNTS)
        out["Translations"] = {"Status": INVOICE_STATUS_LABELS.get(record["Status"], "")}
        return out
    # HostFact prints dates without time, and gives drafts a ScheduledAt and an empty SentDate.
    for key in ("SentDate", "ReminderDate", "SummationDate", "PayDate"):
        values[key] = str(record[key])[:10]
    if draft:
        values["SentDate"] = ""
    else:
        del values["ScheduledAt"]
    out = _pick(values, _HF_INVOICE, _AMOUNTS)
    out["Translations"] = {"Status": INVOICE_STATUS_LABELS.get(record["Status"], "")}
    out["AmountDiscount"] = "0"
    out["AmountDiscountIncl"] = "0"
    rates = line_totals("sales", record["InvoiceLines"], record).by_rate
    out["UsedTaxrates"] = {
        number_text(rate / HUNDRED): {
            "AmountExcl": number_text(amounts.excl),
            "AmountTax": number_text(amounts.tax),
            "AmountIncl": number_text(amounts.incl),
        }
        for rate, amounts in rates.items()
    }
    return out


def invoice_row(dialect: Dialect, record: Record) -> dict[str, Any]:
    """One row of ``invoice list``."""
    values = dict(record)
    values["Date"] = str(record["Date"])[:10]
    if dialect == "wefact":
        values["AmountOutstanding"] = invoice_outstanding(record)
        values["PayBefore"] = add_days(record["Date"], record["Term"])
        return _pick(values, _WF_INVOICE_ROW, _AMOUNTS)
    values["AmountOpen"] = invoice_open_amount(record)
    return _pick(values, _HF_INVOICE_ROW, _AMOUNTS)


# -- purchase invoices ---------------------------------------------------------------------------------------


def creditinvoice_outstanding(record: Record) -> Decimal:
    if record["Status"] in (3, 8, 9):
        return ZERO
    outstanding: Decimal = record["AmountIncl"] - record["AmountPaid"]
    return outstanding


def creditinvoice_show(dialect: Dialect, record: Record) -> dict[str, Any]:
    values = dict(record)
    if dialect == "wefact":
        values["AmountOutstanding"] = creditinvoice_outstanding(record)
        values["InvoiceLines"] = [
            _pick(line, _WF_CREDITINVOICE_LINE, frozenset()) for line in record["InvoiceLines"]
        ]
        out = _pick(values, _WF_CREDITINVOICE, _AMOUNTS_CREDITINVOICE)
    else:
        values["InvoiceLines"] = [
            _pick(line, _HF_CREDITINVOICE_LINE, frozenset()) for line in record["InvoiceLines"]
        ]
        out = _pick(values, _HF_CREDITINVOICE, _AMOUNTS_CREDITINVOICE)
    out["Translations"] = {"Status": CREDITINVOICE_STATUS_LABELS.get(record["Status"], "")}
    return out


def creditinvoice_row(dialect: Dialect, record: Record) -> dict[str, Any]:
    values = dict(record)
    values["PayBefore"] = add_days(record["Date"], record["Term"])
    values["PartPayment"] = values["AmountOutstanding"] = creditinvoice_outstanding(record)
    order = _WF_CREDITINVOICE_ROW if dialect == "wefact" else _HF_CREDITINVOICE_ROW
    return _pick(values, order, _AMOUNTS_CREDITINVOICE)


# -- relations -----------------------------------------------------------------------------------------------


def relation_show(record: Record) -> dict[str, Any]:
    return {key: scalar(value) for key, value in record.items()}


def debtor_row(dialect: Dialect, record: Record) -> dict[str, Any]:
    return _pick(record, _DEBTOR_ROW, frozenset())


def creditor_row(dialect: Dialect, record: Record) -> dict[str, Any]:
    return _pick(record, _CREDITOR_ROW, frozenset())
