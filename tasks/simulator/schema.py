"""The params each controller accepts and their types, validated the way HostFact's getValidParameters does.

A top-level param of the wrong type is dropped without a word; a line with a wrongly typed field drops the
whole ``InvoiceLines`` array; a read-only line field is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from tasks.protocol import Dialect
from tasks.simulator.envelope import ApiFailure
from tasks.simulator.money import to_decimal, to_int
from tasks.simulator.params import Params

Kind = Literal["int", "float", "string", "date", "readonly"]
Schema = Mapping[str, Kind]

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?")

_ADDRESS: dict[str, Kind] = {
    "CompanyName": "string",
    "TaxNumber": "string",
    "Sex": "string",
    "Initials": "string",
    "SurName": "string",
    "Address": "string",
    "ZipCode": "string",
    "City": "string",
    "Country": "string",
    "EmailAddress": "string",
}

INVOICE: dict[str, Kind] = {
    "Identifier": "int",
    "InvoiceCode": "string",
    "Debtor": "int",
    "DebtorCode": "string",
    "Status": "int",
    "SubStatus": "string",
    "Date": "date",
    "Term": "int",
    "PayBefore": "readonly",
    "PaymentURL": "readonly",
    "AmountExcl": "readonly",
    "AmountTax": "readonly",
    "AmountIncl": "readonly",
    "AmountPaid": "float",
    "Discount": "float",
    "VatCalcMethod": "string",
    "IgnoreDiscount": "string",
    "Coupon": "string",
    "ReferenceNumber": "string",
    **_ADDRESS,
    "InvoiceMethod": "int",
    "Template": "int",
    "SentDate": "date",
    "Sent": "int",
    "Reminders": "int",
    "ReminderDate": "date",
    "Summations": "int",
    "SummationDate": "date",
    "Authorisation": "string",
    "PaymentMethod": "string",
    "PayDate": "date",
    "TransactionID": "string",
    "Description": "string",
    "Comment": "string",
    "Created": "readonly",
    "Modified": "readonly",
}
WEFACT_INVOICE: dict[str, Kind] = {
    **INVOICE,
    "ExtraClientContactId": "int",
    "LanguageCode": "string",
    "Currency": "string",
    "VatShift": "string",
    "AmountOutstanding": "readonly",
}

INVOICE_LINE: dict[str, Kind] = {
    "Identifier": "int",
    "Date": "date",
    "Number": "float",
    "NumberSuffix": "string",
    "ProductCode": "string",
    "Description": "string",
    "PriceExcl": "float",
    "DiscountPercentage": "float",
    "DiscountPercentageType": "string",
    "TaxPercentage": "float",
    "PeriodicID": "readonly",
    "PeriodicType": "string",
    "Periods": "int",
    "Periodic": "string",
    "StartPeriod": "date",
    "EndPeriod": "readonly",
    "ProductType": "string",
    "Reference": "int",
}
WEFACT_INVOICE_LINE: dict[str, Kind] = {
    **INVOICE_LINE,
    "TaxCode": "string",
    "StartDate": "date",
    "EndDate": "date",
}

CREDITINVOICE: dict[str, Kind] = {
    "Identifier": "int",
    "CreditInvoiceCode": "string",
    "InvoiceCode": "string",
    "Creditor": "int",
    "CreditorCode": "string",
    "Status": "int",
    "Date": "date",
    "Term": "int",
    "AmountExcl": "readonly",
    "AmountTax": "readonly",
    "AmountIncl": "readonly",
    "AmountPaid": "float",
    "Authorisation": "string",
    "Private": "float",
    "PrivatePercentage": "int",
    "ReferenceNumber": "string",
    "PayDate": "date",
    "Created": "readonly",
    "Modified": "readonly",
}
# WeFact's purchase invoice has no ReferenceNumber, Private or PrivatePercentage, and a Comment ("Interne
# notitie"), wefact.nl/api/inkoopfacturen/toevoegen.
WEFACT_CREDITINVOICE: dict[str, Kind] = {
    **{
        k: v for k, v in CREDITINVOICE.items() if k not in ("ReferenceNumber", "Private", "PrivatePercentage")
    },
    "PaymentMethod": "string",
    "Currency": "string",
    "Comment": "string",
    "AmountOutstanding": "readonly",
}

CREDITINVOICE_LINE: dict[str, Kind] = {
    "Identifier": "int",
    "Number": "float",
    "Description": "string",
    "PriceExcl": "float",
    "TaxPercentage": "float",
}
# WeFact's purchase lines take no Number and no TaxPercentage: the VAT by code, the line's total as PriceExcl.
WEFACT_CREDITINVOICE_LINE: dict[str, Kind] = {
    "Identifier": "int",
    "Description": "string",
    "PriceExcl": "float",
    "TaxCode": "string",
    "CostCategory": "string",
    "StartDate": "date",
    "EndDate": "date",
}

DEBTOR: dict[str, Kind] = {
    "Identifier": "int",
    "DebtorCode": "string",
    "CompanyNumber": "string",
    "LegalForm": "string",
    **_ADDRESS,
    "PhoneNumber": "string",
    "MobileNumber": "string",
    "InvoiceMethod": "int",
    "InvoiceTerm": "int",
    "InvoiceAuthorisation": "string",
    "Taxable": "string",
    "ActiveLogin": "string",
    "Mailing": "string",
    "Comment": "string",
    "Created": "readonly",
    "Modified": "readonly",
}

CREDITOR: dict[str, Kind] = {
    "Identifier": "int",
    "CreditorCode": "string",
    "CompanyNumber": "string",
    **_ADDRESS,
    "PhoneNumber": "string",
    "AccountNumber": "string",
    "Term": "int",
    "Authorisation": "string",
    "Comment": "string",
    "Created": "readonly",
    "Modified": "readonly",
}


def invoice_schema(dialect: Dialect) -> tuple[Schema, Schema]:
    return (WEFACT_INVOICE, WEFACT_INVOICE_LINE) if dialect == "wefact" else (INVOICE, INVOICE_LINE)


def creditinvoice_schema(dialect: Dialect) -> tuple[Schema, Schema]:
    if dialect == "wefact":
        return WEFACT_CREDITINVOICE, WEFACT_CREDITINVOICE_LINE
    return CREDITINVOICE, CREDITINVOICE_LINE


class _Invalid:
    """Marks a value PHP's validateParameter rejects."""


INVALID = _Invalid()


def coerce(kind: Kind, value: Any) -> Any:
    """The typed value for ``kind``, or INVALID."""
    if kind == "string":
        # is_string(): a JSON number sent for a string field is dropped, as HostFact does.
        return value if isinstance(value, str) else INVALID
    if kind == "int":
        number = to_int(value)
        return number if number is not None and number >= 0 else INVALID
    if kind == "float":
        decimal = to_decimal(value)
        return decimal if decimal is not None else INVALID
    if kind == "date":
        if isinstance(value, str) and (value == "" or _DATE.fullmatch(value.strip())):
            return value.strip()
        return INVALID
    return INVALID


def valid_params(params: Params, schema: Schema, line_schema: Schema | None = None) -> dict[str, Any]:
    """The typed params HostFact would accept; ``InvoiceLines`` (when the schema has lines) as typed rows."""
    valid: dict[str, Any] = {}
    for key, kind in schema.items():
        if not params.has(key) or kind == "readonly":
            continue
        value = coerce(kind, params.get(key))
        if value is not INVALID:
            valid[key] = value
    if line_schema is not None and params.has("InvoiceLines"):
        lines = valid_lines(params, line_schema)
        if lines:
            valid["InvoiceLines"] = lines
    return valid


def valid_lines(params: Params, line_schema: Schema) -> list[dict[str, Any]]:
    """Typed line rows; [] when the array is missing or any line field has the wrong type."""
    rows = params.rows("InvoiceLines")
    if not rows:
        return []
    lines: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        line: dict[str, Any] = {}
        for key, kind in line_schema.items():
            if key not in row:
                continue
            if kind == "readonly":
                raise ApiFailure(f"InvoiceLines[{index}].{key} is readonly")
            value = coerce(kind, row[key])
            if value is INVALID:
                return []
            line[key] = value
        lines.append(line)
    return lines
