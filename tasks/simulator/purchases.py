"""The ``creditinvoice`` controller: purchase invoices (inkoopfacturen), numbers and payments. No hooks."""

from __future__ import annotations

import copy
from typing import Any

from tasks.simulator.envelope import ApiFailure, Outcome, Record
from tasks.simulator.lines import apply_lines, new_line, recompute
from tasks.simulator.listing import ListSpec, list_records
from tasks.simulator.money import ZERO, to_decimal, to_int
from tasks.simulator.params import Params
from tasks.simulator.relations import creditor_for, reject_identifier
from tasks.simulator.render import creditinvoice_row, creditinvoice_show
from tasks.simulator.schema import creditinvoice_schema, valid_lines, valid_params
from tasks.simulator.store import CREDITINVOICE_STATUSES, Store, add_days

ALREADY_PAID = "Purchasing invoice is already paid"
_NOT_COPIED = frozenset({"Identifier", "CreditInvoiceCode", "Creditor", "CreditorCode", "InvoiceLines"})
# Supplier name fields kept on the purchase invoice for list rows and search.
_FROM_CREDITOR = ("CompanyName", "Initials", "SurName")


def _list_spec(store: Store) -> ListSpec:
    schema, _ = creditinvoice_schema(store.dialect)
    return ListSpec(
        plural="creditinvoices",
        columns=frozenset(schema) | {"CompanyName", "Initials", "SurName", "Description"},
        default_searchat="CreditInvoiceCode|InvoiceCode|CompanyName|SurName|Description",
        default_sort=("CreditInvoiceCode",),
        default_order="DESC",
        statuses=CREDITINVOICE_STATUSES[store.dialect],
        ranges={
            "date": ("Date", "date"),
            "created": ("Created", "datetime"),
            "modified": ("Modified", "datetime"),
        },
        relations={"creditor": "Creditor"},
        computed={"PayBefore": lambda r: add_days(r["Date"], r["Term"])},
    )


def find_creditinvoice(store: Store, params: Params) -> Record:
    """By ``Identifier``, else by the exact ``CreditInvoiceCode`` (our own number, not the supplier's)."""
    identifier = to_int(params.get("Identifier"))
    if identifier:
        found = store.creditinvoices.get(identifier)
        if found is None:
            raise ApiFailure("Invalid identifier for purchasing invoice")
        return found
    code = params.text("CreditInvoiceCode")
    by_code = store.find("creditinvoices", "CreditInvoiceCode", code) if code else None
    if by_code is None:
        raise ApiFailure("Identifier purchase invoice is invalid or already in use")
    return by_code


def _show(store: Store, record: Record) -> dict[str, Any]:
    return creditinvoice_show(store.dialect, record)


def _check_status(store: Store, status: int) -> None:
    if status not in CREDITINVOICE_STATUSES[store.dialect]:
        raise ApiFailure("Invalid status")


def _commit(store: Store, original: Record, working: Record) -> None:
    working["Modified"] = store.now()
    original.clear()
    original.update(working)
    store.note_code("creditinvoice", original["CreditInvoiceCode"])


def show(store: Store, params: Params) -> Outcome:
    return Outcome(key="creditinvoice", payload=_show(store, find_creditinvoice(store, params)))


def list_(store: Store, params: Params) -> Outcome:
    return list_records(
        store.creditinvoices.values(),
        params,
        _list_spec(store),
        lambda r: creditinvoice_row(store.dialect, r),
    )


def add(store: Store, params: Params) -> Outcome:
    reject_identifier(store, params)
    schema, line_schema = creditinvoice_schema(store.dialect)
    given = valid_params(params, schema, line_schema)
    creditor = creditor_for(store, params)
    if store.dialect == "wefact" and not given.get("InvoiceCode"):
        raise ApiFailure("Please enter the invoice number of the supplier (InvoiceCode)")
    now = store.now()
    record: Record = {
        "Identifier": 0,
        "CreditInvoiceCode": "",
        "InvoiceCode": "",
        "Creditor": creditor["Identifier"],
        "CreditorCode": creditor["CreditorCode"],
        "Status": 1,
        "Date": store.today(),
        "Term": creditor.get("Term", 30),
        "AmountExcl": ZERO,
        "AmountTax": ZERO,
        "AmountIncl": ZERO,
        "AmountPaid": ZERO,
        "Authorisation": creditor.get("Authorisation", "no"),
        **(
            {"Comment": ""}
            if store.dialect == "wefact"
            else {"Private": ZERO, "PrivatePercentage": 0, "ReferenceNumber": ""}
        ),
        "PayDate": "",
        "InvoiceLines": [],
        "Created": now,
        "Modified": now,
        **{key: creditor.get(key, "") for key in _FROM_CREDITOR},
    }
    if store.dialect == "wefact":
        record.update({"SubStatus": "", "AuthorisationStatus": "", "PaymentMethod": "", "Currency": "EUR"})
    # HostFact's creditinvoice add reads Term from an undefined variable: the creditor's term stays.
    copied = _NOT_COPIED | ({"Term"} if store.dialect == "hostfact" else set())
    record.update({k: v for k, v in given.items() if k not in copied})
    _check_status(store, record["Status"])
    code = given.get("CreditInvoiceCode", "")
    if not code:
        code = store.next_code("creditinvoice")
    elif not store.code_free("creditinvoices", "CreditInvoiceCode", code):
        raise ApiFailure(f"Invoice no. {code} is already in use for another purchase invoice.")
    record["CreditInvoiceCode"] = code
    lines = given.get("InvoiceLines", [])
    if not lines:
        raise ApiFailure(f"Invoice {record['InvoiceCode']} does not contain invoice lines")
    for line in lines:
        record["InvoiceLines"].append(new_line(store, "purchase", line, default_date=record["Date"]))
    recompute(record, "purchase")
    record["Identifier"] = store.new_id("creditinvoices")
    store.creditinvoices[record["Identifier"]] = record
    store.note_code("creditinvoice", code)
    return Outcome(key="creditinvoice", payload=_show(store, record), record=record, changed=True)


def edit(store: Store, params: Params) -> Outcome:
    original = find_creditinvoice(store, params)
    schema, line_schema = creditinvoice_schema(store.dialect)
    given = valid_params(params, schema, line_schema)
    record = copy.deepcopy(original)
    code = given.get("CreditInvoiceCode")
    if code is not None and code == "":
        raise ApiFailure("Identifier purchase invoice is invalid or already in use")
    if code is not None and code != record["CreditInvoiceCode"]:
        if not store.code_free("creditinvoices", "CreditInvoiceCode", code, own_id=record["Identifier"]):
            raise ApiFailure(f"Invoice no. {code} is already in use for another purchase invoice.")
        record["CreditInvoiceCode"] = code
    if params.get("Creditor") or params.text("CreditorCode"):
        creditor = creditor_for(store, params)
        record["Creditor"], record["CreditorCode"] = creditor["Identifier"], creditor["CreditorCode"]
        record.update({key: creditor.get(key, "") for key in _FROM_CREDITOR})
    record.update({k: v for k, v in given.items() if k not in _NOT_COPIED})
    _check_status(store, record["Status"])
    apply_lines(
        store,
        "purchase",
        record,
        given.get("InvoiceLines", []),
        owners=store.creditinvoices.values(),
        default_date=record["Date"],
    )
    _commit(store, original, record)
    # The seed example: edit answers with the purchase invoice and no success message.
    return Outcome(key="creditinvoice", payload=_show(store, original), record=original, changed=True)


def delete(store: Store, params: Params) -> Outcome:
    record = find_creditinvoice(store, params)
    del store.creditinvoices[record["Identifier"]]
    return Outcome(
        success=[f"Purchasing invoice {record['CreditInvoiceCode']} has been deleted"],
        record=record,
        changed=True,
    )


def partpayment(store: Store, params: Params) -> Outcome:
    original = find_creditinvoice(store, params)
    if original["Status"] == 3:
        raise ApiFailure(ALREADY_PAID)
    amount = to_decimal(params.get("AmountPaid")) or ZERO
    record = copy.deepcopy(original)
    record["AmountPaid"] = total = record["AmountPaid"] + amount
    open_amount = record["AmountIncl"] - total
    outcome = Outcome(key="creditinvoice", record=original, changed=True)
    code = record["CreditInvoiceCode"]
    if open_amount == 0:
        # The PayDate param is not passed through: a purchase invoice paid by partpayment is paid today.
        record["Status"], record["PayDate"] = 3, store.today()
    else:
        record["Status"] = 1 if total == 0 else 2
        if open_amount < 0:
            outcome.warning = [
                f"The partly payment of purchasing invoice {code} is higher than the outstanding amount"
            ]
    method = params.text("PaymentMethod")
    if store.dialect == "wefact":
        record["PaymentMethod"] = method or record.get("PaymentMethod") or "wire"
    _commit(store, original, record)
    outcome.success = [f"The partly payment of purchasing invoice {code} has been processed."]
    outcome.payload = _show(store, original)
    return outcome


def markaspaid(store: Store, params: Params) -> Outcome:
    record = find_creditinvoice(store, params)
    if record["Status"] == 3:
        raise ApiFailure(ALREADY_PAID)
    # HostFact's creditinvoice::markaspaid() zeroes AmountPaid, unlike the sales invoice.
    record.update({"Status": 3, "AmountPaid": ZERO, "PayDate": store.today(), "Modified": store.now()})
    return Outcome(
        success=[f"Purchasing invoice {record['CreditInvoiceCode']} is marked as paid"],
        record=record,
        changed=True,
    )


# -- creditinvoiceline ---------------------------------------------------------------------------------------


def _keep_stale_total(store: Store, params: Params, before: Record, record: Record) -> None:
    """Line changes recompute AmountExcl but leave AmountIncl as it was: HostFact's until the purchase invoice
    is edited (creditinvoice::edit), WeFact's unless RecalculateInclTotalAmount is "yes"."""
    if store.dialect == "wefact" and params.text("RecalculateInclTotalAmount") == "yes":
        return
    record["AmountIncl"] = before["AmountIncl"]


def _line_rows(store: Store, params: Params) -> list[dict[str, Any]]:
    if params.rows("InvoiceLines") is None:
        raise ApiFailure("Invalid type for 'InvoiceLines'")
    _, line_schema = creditinvoice_schema(store.dialect)
    return valid_lines(params, line_schema)


def line_add(store: Store, params: Params) -> Outcome:
    original = find_creditinvoice(store, params)
    rows = [{k: v for k, v in row.items() if k != "Identifier"} for row in _line_rows(store, params)]
    if not rows:
        raise ApiFailure("Invalid type for 'InvoiceLines'")
    record = copy.deepcopy(original)
    added = apply_lines(store, "purchase", record, rows, owners=(), default_date=record["Date"])
    _keep_stale_total(store, params, original, record)
    _commit(store, original, record)
    return Outcome(
        key="creditinvoice",
        payload=_show(store, original),
        success=[f"Successfully added {added} invoice lines"],
        record=original,
        changed=True,
    )


def line_delete(store: Store, params: Params) -> Outcome:
    original = find_creditinvoice(store, params)
    rows = _line_rows(store, params)
    ids = [row["Identifier"] for row in rows if "Identifier" in row]
    if not ids:
        raise ApiFailure("At least 1 identifier has to be entered")
    own = {line["Identifier"] for line in original["InvoiceLines"]}
    for line_id in ids:
        if line_id in own:
            continue
        elsewhere = any(
            line_id in {ln["Identifier"] for ln in r["InvoiceLines"]} for r in store.creditinvoices.values()
        )
        if elsewhere:
            raise ApiFailure("Cannot delete invoice lines from another purchasing invoice")
        raise ApiFailure(f"No invoice line found with identifier '{line_id}'")
    if len(rows) >= len(original["InvoiceLines"]):
        raise ApiFailure(
            "It is not possible to delete all invoice lines of an invoice. "
            "An invoice needs to contain at least one invoice line."
        )
    record = copy.deepcopy(original)
    record["InvoiceLines"] = [line for line in record["InvoiceLines"] if line["Identifier"] not in ids]
    recompute(record, "purchase")
    _keep_stale_total(store, params, original, record)
    _commit(store, original, record)
    return Outcome(
        key="creditinvoice",
        payload=_show(store, original),
        success=[f"Successfully deleted {len(own & set(ids))} invoice lines"],
        record=original,
        changed=True,
    )
