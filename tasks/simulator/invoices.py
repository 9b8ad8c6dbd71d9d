"""The ``invoice`` and ``invoiceline`` controllers: sales invoices, numbers, payments, credit and sending."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from tasks.simulator.envelope import ApiFailure, EmptyAnswer, Outcome, PendingHook, Record
from tasks.simulator.lines import apply_lines, new_line, recompute
from tasks.simulator.listing import ListSpec, list_records
from tasks.simulator.money import ZERO, to_decimal, to_int
from tasks.simulator.params import Params
from tasks.simulator.relations import debtor_for, reject_identifier
from tasks.simulator.render import invoice_row, invoice_show
from tasks.simulator.schema import invoice_schema, valid_lines, valid_params
from tasks.simulator.store import CONCEPT_PREFIX, INVOICE_STATUSES, Store, add_days, is_draft_code

INVALID_IDENTIFIER = "Invalid identifier for invoice"
ALREADY_PAID = "The invoice is already paid"

# Invoice fields copied from the debtor on add (and on a change of debtor), as _checkInvoiceDebtorData does.
_FROM_DEBTOR = (
    "CompanyName",
    "TaxNumber",
    "Initials",
    "SurName",
    "Sex",
    "Address",
    "ZipCode",
    "City",
    "Country",
    "EmailAddress",
    "InvoiceMethod",
)
# Params that locate the invoice or are handled separately, never copied onto the record as given.
_NOT_COPIED = frozenset({"Identifier", "InvoiceCode", "Debtor", "DebtorCode", "Status", "InvoiceLines"})


def _list_spec(store: Store) -> ListSpec:
    schema, _ = invoice_schema(store.dialect)
    return ListSpec(
        plural="invoices",
        columns=frozenset(schema),
        default_searchat="InvoiceCode|CompanyName|SurName",
        default_sort=("Date", "InvoiceCode"),
        default_order="DESC",
        statuses=INVOICE_STATUSES[store.dialect],
        ranges={
            "date": ("Date", "date"),
            "paybefore": ("PayBefore", "date"),
            "paydate": ("PayDate", "date"),
            "created": ("Created", "datetime"),
            "modified": ("Modified", "datetime"),
        },
        relations={"debtor": "Debtor"},
        computed={"PayBefore": lambda r: add_days(r["Date"], r["Term"])},
        status_words={
            "reminders": lambda r: r["Status"] in (2, 3) and r["Reminders"] > 0,
            "summations": lambda r: r["Status"] in (2, 3) and r["Summations"] > 0,
        },
    )


# -- shared pieces -------------------------------------------------------------------------------------------


def find_invoice(store: Store, params: Params) -> Record:
    """The invoice named by ``Identifier`` (wins when > 0) or by the exact ``InvoiceCode``."""
    identifier = to_int(params.get("Identifier"))
    record: Record | None
    if identifier is not None and identifier > 0:
        record = store.invoices.get(identifier)
    else:
        code = params.text("InvoiceCode")
        record = store.find("invoices", "InvoiceCode", code) if code else None
    if record is None or record["Identifier"] in store.hidden:
        raise ApiFailure(INVALID_IDENTIFIER)
    return record


def hook_ref(record: Record) -> dict[str, Any]:
    return {"id": record["Identifier"], "Debtor": record["Debtor"], "InvoiceCode": record["InvoiceCode"]}


def _show(store: Store, record: Record) -> dict[str, Any]:
    return invoice_show(store.dialect, record)


def _commit(store: Store, original: Record, working: Record) -> None:
    """Write a working copy back into the live record, so references held by tests stay valid."""
    working["Modified"] = store.now()
    original.clear()
    original.update(working)
    store.note_code("invoice", original["InvoiceCode"])
    store.note_code("concept", original["InvoiceCode"])


def _copy_debtor(record: Record, debtor: Record, given: dict[str, Any]) -> None:
    record["Debtor"] = debtor["Identifier"]
    record["DebtorCode"] = debtor["DebtorCode"]
    for key in _FROM_DEBTOR:
        record[key] = given.get(key, debtor.get(key, record.get(key, "")))
    record["Authorisation"] = given.get("Authorisation", debtor.get("InvoiceAuthorisation", "no"))
    if "Term" not in given and isinstance(debtor.get("InvoiceTerm"), int):
        record["Term"] = debtor["InvoiceTerm"]


def _check_status(store: Store, status: int) -> None:
    if status not in INVOICE_STATUSES[store.dialect]:
        raise ApiFailure("Invalid status")


def _blank_invoice(store: Store) -> Record:
    now = store.now()
    record: Record = {
        "Identifier": 0,
        "InvoiceCode": "",
        "Debtor": 0,
        "DebtorCode": "",
        "Status": 0,
        "SubStatus": "",
        "Date": store.today(),
        "Term": 14,
        "AmountExcl": ZERO,
        "AmountTax": ZERO,
        "AmountIncl": ZERO,
        "AmountPaid": ZERO,
        "Discount": ZERO,
        "VatCalcMethod": "excl",
        "IgnoreDiscount": "no",
        "Coupon": "",
        "ReferenceNumber": "",
        **dict.fromkeys(_FROM_DEBTOR, ""),
        "InvoiceMethod": 0,
        "ScheduledAt": "",
        "SentDate": "",
        "Sent": 0,
        "Reminders": 0,
        "ReminderDate": "",
        "Summations": 0,
        "SummationDate": "",
        "Authorisation": "no",
        "PaymentMethod": "",
        "PayDate": "",
        "TransactionID": "",
        "Description": "",
        "Comment": "",
        "InvoiceLines": [],
        "Created": now,
        "Modified": now,
        # Not printed: the invoice a credit invoice credits (HostFact's CorrespondingInvoice).
        "CorrespondingInvoice": None,
    }
    if store.dialect == "wefact":
        record.update(
            {
                "PaymentPausedEndDate": "",
                "PaymentPausedReason": "",
                "ExtraClientContactId": 0,
                "LanguageCode": "nl_nl",
                "Currency": "EUR",
                "VatShift": "no",
            }
        )
    else:
        record.update({"TaxRate": ZERO, "Compound": "no", "Template": 1})
    return record


def _debtor_of(store: Store, record: Record) -> Record | None:
    return store.debtors.get(record["Debtor"])


def _target_rules(store: Store, record: Record) -> None:
    """The administration's discount rule, as invoice::add/edit run discount::check before the totals."""
    # invoice_api_controller takes "yes"/"no" or 1/0 (invoice::validate keeps 0 or 1); show prints yes/no.
    record["IgnoreDiscount"] = "yes" if str(record.get("IgnoreDiscount")) in ("yes", "1") else "no"
    rule = store.rules.discount
    if rule is not None and record.get("IgnoreDiscount") != "yes" and record["Discount"] < rule:
        record["Discount"] = rule


def _direct_debit(store: Store, record: Record) -> None:
    """invoice::addInvoiceToSDDBatch: a sent or partly paid invoice with a mandate is collected next."""
    if store.rules.direct_debit and record["Authorisation"] == "yes" and record["Status"] in (2, 3):
        store.sdd_batch.add(record["Identifier"])


def _insert(store: Store, record: Record) -> Record:
    record["Identifier"] = store.new_id("invoices")
    store.invoices[record["Identifier"]] = record
    store.note_code("invoice", record["InvoiceCode"])
    store.note_code("concept", record["InvoiceCode"])
    return record


# -- invoice -------------------------------------------------------------------------------------------------


def show(store: Store, params: Params) -> Outcome:
    return Outcome(key="invoice", payload=_show(store, find_invoice(store, params)))


def list_(store: Store, params: Params) -> Outcome:
    visible = (r for r in store.invoices.values() if r["Identifier"] not in store.hidden)
    return list_records(visible, params, _list_spec(store), lambda r: invoice_row(store.dialect, r))


def add(store: Store, params: Params) -> Outcome:
    reject_identifier(store, params)
    schema, line_schema = invoice_schema(store.dialect)
    given = valid_params(params, schema, line_schema)
    debtor = debtor_for(store, params)
    record = _blank_invoice(store)
    record.update({k: v for k, v in given.items() if k not in _NOT_COPIED})
    _copy_debtor(record, debtor, given)
    status = given.get("Status", 0)
    _check_status(store, status)
    record["Status"] = status
    code = given.get("InvoiceCode", "")
    if status == 0:
        # A draft gets a concept number unless a free "[concept]..." one was passed.
        if not (code.startswith(CONCEPT_PREFIX) and store.code_free("invoices", "InvoiceCode", code)):
            code = store.next_code("concept")
        record["SentDate"] = ""
    elif not code:
        code = store.next_code("invoice")
    elif not store.code_free("invoices", "InvoiceCode", code):
        raise ApiFailure("Invalid invoice number")
    record["InvoiceCode"] = code
    lines = given.get("InvoiceLines", [])
    if not lines:
        raise ApiFailure(f"Invoice {code} does not contain invoice lines")
    for line in lines:
        record["InvoiceLines"].append(
            new_line(store, "sales", line, default_date=record["Date"], debtor=debtor)
        )
    _target_rules(store, record)
    recompute(record, "sales")
    if status == 4 and not record["PayDate"]:
        record["PayDate"] = store.today()
    _insert(store, record)
    _direct_debit(store, record)
    return Outcome(
        key="invoice",
        payload=_show(store, record),
        hooks=[("invoice_is_created", hook_ref(record))],
        record=record,
        changed=True,
        uncommitted=record["Identifier"],
    )


def edit(store: Store, params: Params) -> Outcome:
    original = find_invoice(store, params)
    schema, line_schema = invoice_schema(store.dialect)
    given = valid_params(params, schema, line_schema)
    record = copy.deepcopy(original)
    if params.get("Debtor") or params.text("DebtorCode"):
        _copy_debtor(record, debtor_for(store, params), given)
    status: int = given["Status"] if "Status" in given else record["Status"]
    _check_status(store, status)
    code: str | None = given.get("InvoiceCode")
    current = record["InvoiceCode"]
    if status == 0:
        if not current.startswith(CONCEPT_PREFIX) and not (
            code is not None
            and code.startswith(CONCEPT_PREFIX)
            and store.code_free("invoices", "InvoiceCode", code, own_id=record["Identifier"])
        ):
            code = store.next_code("concept")
    elif (code is not None and code.startswith(CONCEPT_PREFIX)) or (
        code is None and current.startswith(CONCEPT_PREFIX)
    ):
        # Leaving draft status hands out the next real number.
        code = store.next_code("invoice")
    if code is not None and not store.code_free("invoices", "InvoiceCode", code, own_id=record["Identifier"]):
        raise ApiFailure(f"Invoice number {code} is already used by a different invoice")
    record.update({k: v for k, v in given.items() if k not in _NOT_COPIED})
    record["Status"] = status
    if code is not None:
        record["InvoiceCode"] = code
    _target_rules(store, record)
    apply_lines(
        store,
        "sales",
        record,
        given.get("InvoiceLines", []),
        owners=store.invoices.values(),
        default_date=store.today(),
        debtor=_debtor_of(store, record),
    )
    _commit(store, original, record)
    _direct_debit(store, original)
    return Outcome(
        key="invoice",
        payload=_show(store, original),
        hooks=[("invoice_is_edited", hook_ref(original))],
        record=original,
        changed=True,
    )


def delete(store: Store, params: Params) -> Outcome:
    record = find_invoice(store, params)
    if record["Status"] != 0:
        raise ApiFailure("Only draft invoices can be deleted")
    del store.invoices[record["Identifier"]]
    # No hook: HostFact has no invoice_is_deleted.
    return Outcome(success=[f"Invoice {record['InvoiceCode']} has been deleted"], record=record, changed=True)


def partpayment(store: Store, params: Params) -> Outcome:
    original = find_invoice(store, params)
    status, code = original["Status"], original["InvoiceCode"]
    if status == 0 and is_draft_code(code):
        raise ApiFailure(
            f"Invoice {code} cannot receive a partial payment, because it is still a draft invoice. "
            "Please send the invoice first."
        )
    if status >= 4:
        raise ApiFailure(ALREADY_PAID)
    if is_draft_code(code):
        # Status 1-3 with a concept code: HostFact's action falls through without printing anything.
        raise EmptyAnswer()
    # AmountPaid is THIS payment; a missing or unreadable amount books 0 and still succeeds.
    amount = to_decimal(params.get("AmountPaid")) or ZERO
    record = copy.deepcopy(original)
    record["AmountPaid"] = total = record["AmountPaid"] + amount
    open_amount: Decimal = record["AmountIncl"] - total
    method = params.text("PaymentMethod")
    if method or store.dialect == "wefact":
        record["PaymentMethod"] = method or record["PaymentMethod"] or "wire"
    hooks: list[PendingHook] = []
    if open_amount == 0:
        record["Status"] = 4
        record["PayDate"] = params.text("PayDate") or store.today()
        if record["SubStatus"] == "PAUSED":
            record["SubStatus"] = ""
        hooks.append(("invoice_is_paid", hook_ref(record)))
    else:
        # An overpayment stays partly paid, without an error; the invoice API drops the class's warning.
        record["Status"] = 2 if total == 0 else 3
        data = hook_ref(record) | {
            "AmountPaidNow": amount,
            "AmountPaidTotal": total,
            "AmountOpen": open_amount,
        }
        hooks.append(("invoice_is_partly_paid", data))
    _commit(store, original, record)
    return Outcome(
        key="invoice",
        payload=_show(store, original),
        success=[f"The partly payment of invoice {code} has been processed."],
        hooks=hooks,
        record=original,
        changed=True,
    )


def markaspaid(store: Store, params: Params) -> Outcome:
    record = find_invoice(store, params)
    status, code = record["Status"], record["InvoiceCode"]
    if status == 4:
        raise ApiFailure(ALREADY_PAID)
    if status > 3 or is_draft_code(code):
        if store.dialect == "hostfact":
            # HostFact 6.0.2 prints nothing for drafts and for Status 8/9.
            raise EmptyAnswer()
        raise ApiFailure(f"Invoice {code} cannot be marked as paid")
    # AmountPaid stays as it is (often 0.00 on a paid invoice).
    record["Status"] = 4
    record["PayDate"] = params.text("PayDate") or store.today()
    if record["SubStatus"] == "PAUSED":
        record["SubStatus"] = ""
    record["Modified"] = store.now()
    return Outcome(
        success=[f"Invoice {code} has been paid."],
        hooks=[("invoice_is_paid", hook_ref(record))],
        record=record,
        changed=True,
    )


def markasunpaid(store: Store, params: Params) -> Outcome:
    record = find_invoice(store, params)
    if record["Status"] != 4:
        raise ApiFailure("Invoice is not marked as paid")
    paid: Decimal = record["AmountPaid"]
    if paid != 0 and paid >= record["AmountIncl"]:
        record["Status"], record["AmountPaid"] = 2, ZERO
    elif paid > 0:
        record["Status"] = 3
    else:
        record["Status"] = 2
    record.update({"PayDate": "", "PaymentMethod": "", "TransactionID": ""})
    record["Modified"] = store.now()
    return Outcome(
        success=[f"Payment undone for invoice {record['InvoiceCode']}."],
        hooks=[("invoice_is_unpaid", hook_ref(record))],
        record=record,
        changed=True,
    )


def credit(store: Store, params: Params) -> Outcome:
    original = find_invoice(store, params)
    code = original["InvoiceCode"]
    _check_creditable(original)
    credit_invoice = _credit_invoice(store, original, original["InvoiceLines"])
    original.update({"Status": 9, "AmountPaid": ZERO, "Modified": store.now()})
    credited = hook_ref(original) | {
        "CreditInvoiceID": credit_invoice["Identifier"],
        "CreditInvoiceCode": credit_invoice["InvoiceCode"],
    }
    return Outcome(
        key="invoice",
        payload=_show(store, credit_invoice),
        # invoice_api_controller::credit_api_action: the original's message first.
        success=[
            f"Invoice {code} is credited and set on status 'cancelled'",
            f"Invoice {credit_invoice['InvoiceCode']} has been created successfully",
        ],
        # invoice::createCreditInvoice cancels the original before it adds the credit invoice, so the
        # forwarder reads Status 9 for it: a full credit.
        hooks=[("invoice_is_credited", credited), _created_credit(credit_invoice, 9)],
        record=credit_invoice,
        changed=True,
    )


def credit_partly(store: Store, identifier: int, numbers: Mapping[int, Decimal | int | str]) -> Outcome:
    """HostFact's back office "partly credit" (invoice::createCreditInvoice with credit_type "partly"): a
    credit invoice of the chosen lines (line Identifier -> the number to credit), the original kept.

    The original, when sent or partly paid, gets the credit added to its AmountPaid: Status 3, or Status 4
    with today's PayDate and invoice_is_paid when the credit covers what was open. Choosing every line with
    its whole number is a full credit.
    """
    original = store.invoices.get(identifier)
    if original is None:
        raise ApiFailure(INVALID_IDENTIFIER)
    _check_creditable(original)
    by_id = {line["Identifier"]: line for line in original["InvoiceLines"]}
    unknown = sorted(set(numbers) - set(by_id))
    if unknown:
        raise ApiFailure(f"Unknown invoice line(s) {unknown} on {original['InvoiceCode']}")
    chosen: dict[int, Decimal] = {}
    for line_id, number in numbers.items():
        value = to_decimal(number)
        if value is None:
            raise ApiFailure(f"Invalid number {number!r} for invoice line {line_id}")
        chosen[line_id] = value
    if not chosen or sum(chosen.values()) == 0:
        raise ApiFailure("For a credit invoice, at least 1 line must be selected")
    if len(chosen) == len(by_id) and all(chosen[i] == by_id[i]["Number"] for i in chosen):
        return credit(store, Params({"Identifier": identifier}))
    lines = [by_id[line_id] | {"Number": number} for line_id, number in chosen.items()]
    status_before = original["Status"]
    open_before = original["AmountIncl"] - original["AmountPaid"]
    credit_invoice = _credit_invoice(store, original, lines)
    hooks: list[PendingHook] = []
    if status_before in (2, 3):
        credited = -credit_invoice["AmountIncl"]
        original.update({"Status": 3, "AmountPaid": original["AmountPaid"] + credited})
        if open_before == credited:
            original.update({"Status": 4, "PayDate": store.today(), "SubStatus": ""})
            hooks.append(("invoice_is_paid", hook_ref(original)))
        original["Modified"] = store.now()
    # The credit invoice's invoice_is_created fires inside invoice::add; factsync's forwarder reads the
    # original's status then (before the change above) and sends the hook when HostFact's request ends.
    hooks.append(_created_credit(credit_invoice, status_before))
    return Outcome(key="invoice", payload=_show(store, credit_invoice), hooks=hooks, record=credit_invoice)


def _check_creditable(original: Record) -> None:
    code = original["InvoiceCode"]
    if original["Status"] == 9:
        raise ApiFailure(f"Failed to create a credit invoice for {code}. Invoice has status cancelled")
    if original["Status"] == 0 or is_draft_code(code):
        raise ApiFailure(f"It is not possible to credit draft invoice {code}")


def _credit_invoice(store: Store, original: Record, lines: list[Record]) -> Record:
    """invoice::createCreditInvoice's new invoice: the next number, today, Status 8, ``lines`` negated, and
    the CREDIT_TEXT line."""
    code = original["InvoiceCode"]
    today, now = store.today(), store.now()
    credit_invoice = copy.deepcopy(original)
    credit_invoice.update(
        {
            "InvoiceCode": store.next_code("invoice"),
            "Status": 8,
            "SubStatus": "",
            "Date": today,
            "AmountPaid": ZERO,
            "Sent": 0,
            "Reminders": 0,
            "ReminderDate": "",
            "Summations": 0,
            "SummationDate": "",
            "PaymentMethod": "",
            "PayDate": "",
            "Authorisation": "no",
            "TransactionID": "",
            "Created": now,
            "Modified": now,
            "CorrespondingInvoice": original["Identifier"],
            "InvoiceLines": [],
        }
    )
    for line in lines:
        negated = {k: v for k, v in line.items() if k != "Identifier"} | {"PriceExcl": -line["PriceExcl"]}
        credit_invoice["InvoiceLines"].append(new_line(store, "sales", negated, default_date=today))
    if store.credit_text and store.dialect == "hostfact":
        # The CREDIT_TEXT setting (installation.sql's default names the original), at price 0.
        text = store.credit_text.replace("[invoice->InvoiceCode]", code)
        credit_invoice["InvoiceLines"].append(
            new_line(store, "sales", {"Description": text, "PriceExcl": ZERO}, default_date=today)
        )
    recompute(credit_invoice, "sales")
    return _insert(store, credit_invoice)


def _created_credit(credit_invoice: Record, original_status: int) -> PendingHook:
    """invoice_is_created of a credit invoice as factsync's forwarder sends it: with what HostFact's API does
    not show, the original (CorrespondingInvoice) and the original's Status at that moment."""
    return (
        "invoice_is_created",
        hook_ref(credit_invoice)
        | {
            "CorrespondingInvoice": credit_invoice["CorrespondingInvoice"],
            "CorrespondingInvoiceStatus": original_status,
        },
    )


def _send_counts(record: Record, via_mail: bool = True) -> dict[str, Any]:
    return hook_ref(record) | {
        "viaMail": via_mail,
        "viaPost": not via_mail,
        "Sent": record["Sent"],
        "Reminders": record["Reminders"],
        "Summations": record["Summations"],
    }


def sendbyemail(store: Store, params: Params) -> Outcome:
    original = find_invoice(store, params)
    record = copy.deepcopy(original)
    if record["Status"] in (0, 1):
        record["Status"] = 2
    if is_draft_code(record["InvoiceCode"]):
        # Sending a draft hands out its real number.
        record["InvoiceCode"] = store.next_code("invoice")
    record["Sent"] += 1
    record["SentDate"] = store.now()
    record["ScheduledAt"] = ""
    record["InvoiceMethod"] = 0
    _commit(store, original, record)
    outcome = Outcome(
        key="invoice",
        payload=_show(store, original),
        success=[f"Invoice {original['InvoiceCode']} has been sent by e-mail"],
        hooks=[("invoice_is_sent", _send_counts(original))],
        record=original,
        changed=True,
    )
    if store.dialect == "wefact":
        outcome.warning = []
    return outcome


def _send_dunning(
    store: Store, params: Params, counter: str, date_field: str, hook: str, what: str
) -> Outcome:
    record = find_invoice(store, params)
    code = record["InvoiceCode"]
    if record["Status"] not in (2, 3):
        raise ApiFailure(f"It is not possible to send a {what} for invoice {code}")
    if record["SubStatus"] == "PAUSED":
        raise ApiFailure(
            f"It is not possible to send a payment reminder for invoice {code}, "
            "because the payment process is paused."
        )
    record[counter] += 1
    record[date_field] = store.today()
    record["Modified"] = store.now()
    return Outcome(
        success=[f"The {what} for invoice {code} has been sent by e-mail"],
        hooks=[(hook, _send_counts(record))],
        record=record,
        changed=True,
    )


def sendreminderbyemail(store: Store, params: Params) -> Outcome:
    return _send_dunning(
        store, params, "Reminders", "ReminderDate", "invoice_reminder_is_sent", "payment reminder"
    )


def sendsummationbyemail(store: Store, params: Params) -> Outcome:
    return _send_dunning(
        store, params, "Summations", "SummationDate", "invoice_summation_is_sent", "summation"
    )


# -- invoiceline ---------------------------------------------------------------------------------------------


def _line_rows(store: Store, params: Params) -> list[dict[str, Any]]:
    if params.rows("InvoiceLines") is None:
        raise ApiFailure("Invalid type for 'InvoiceLines'")
    _, line_schema = invoice_schema(store.dialect)
    return valid_lines(params, line_schema)


def line_add(store: Store, params: Params) -> Outcome:
    original = find_invoice(store, params)
    rows = [{k: v for k, v in row.items() if k != "Identifier"} for row in _line_rows(store, params)]
    if not rows:
        raise ApiFailure("Invalid type for 'InvoiceLines'")
    record = copy.deepcopy(original)
    _target_rules(store, record)
    added = apply_lines(
        store, "sales", record, rows, owners=(), default_date=store.today(), debtor=_debtor_of(store, record)
    )
    _commit(store, original, record)
    return Outcome(
        key="invoice",
        payload=_show(store, original),
        success=[f"Successfully added {added} invoice lines"],
        hooks=[("invoice_is_edited", hook_ref(original))],
        record=original,
        changed=True,
    )


def line_delete(store: Store, params: Params) -> Outcome:
    original = find_invoice(store, params)
    rows = _line_rows(store, params)
    ids = [row["Identifier"] for row in rows if "Identifier" in row]
    if not ids:
        raise ApiFailure("At least 1 identifier has to be entered")
    own = {line["Identifier"] for line in original["InvoiceLines"]}
    for line_id in ids:
        if line_id in own:
            continue
        elsewhere = any(
            line_id in {ln["Identifier"] for ln in r["InvoiceLines"]} for r in store.invoices.values()
        )
        if elsewhere:
            raise ApiFailure("It is not possible to delete invoice lines of another invoice")
        raise ApiFailure(f"No invoice line found with identifier '{line_id}'")
    if len(rows) >= len(original["InvoiceLines"]):
        raise ApiFailure(
            "It is not possible to delete all invoice lines of an invoice. "
            "An invoice needs to contain at least one invoice line."
        )
    record = copy.deepcopy(original)
    record["InvoiceLines"] = [line for line in record["InvoiceLines"] if line["Identifier"] not in ids]
    recompute(record, "sales")
    _commit(store, original, record)
    return Outcome(
        key="invoice",
        payload=_show(store, original),
        success=[f"Successfully deleted {len(own & set(ids))} invoice lines"],
        hooks=[("invoice_is_edited", hook_ref(original))],
        record=original,
        changed=True,
    )
