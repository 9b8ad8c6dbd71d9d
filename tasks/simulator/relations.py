"""The ``debtor`` and ``creditor`` controllers: customers and suppliers, and looking them up for invoices."""

from __future__ import annotations

from typing import Any

from tasks.simulator.envelope import ApiFailure, Outcome, Record
from tasks.simulator.listing import ListSpec, list_records
from tasks.simulator.money import to_int
from tasks.simulator.params import Params
from tasks.simulator.render import creditor_row, debtor_row, relation_show
from tasks.simulator.schema import CREDITOR, DEBTOR, valid_params
from tasks.simulator.store import Store

IDENTIFIER_NOT_ALLOWED = "Een Identifier is niet toegestaan voor deze actie"

DEBTOR_LIST = ListSpec(
    plural="debtors",
    columns=frozenset(DEBTOR),
    default_searchat="DebtorCode|CompanyName|SurName|EmailAddress",
    default_sort=("DebtorCode",),
    default_order="ASC",
    ranges={"created": ("Created", "datetime"), "modified": ("Modified", "datetime")},
)
CREDITOR_LIST = ListSpec(
    plural="creditors",
    columns=frozenset(CREDITOR),
    default_searchat="CreditorCode|CompanyName|SurName|EmailAddress",
    default_sort=("CreditorCode",),
    default_order="ASC",
    ranges={"created": ("Created", "datetime"), "modified": ("Modified", "datetime")},
)


def reject_identifier(store: Store, params: Params) -> None:
    """WeFact refuses an Identifier on add; HostFact ignores it."""
    if store.dialect == "wefact" and params.has("Identifier"):
        raise ApiFailure(IDENTIFIER_NOT_ALLOWED)


# -- lookups used by the invoice controllers -----------------------------------------------------------------


def debtor_for(store: Store, params: Params) -> Record:
    """The debtor named by ``Debtor`` (id) or ``DebtorCode``, as invoice add/edit resolve it."""
    debtor_id = to_int(params.get("Debtor"))
    if debtor_id:
        found = store.debtors.get(debtor_id)
        if found is None:
            raise ApiFailure("Invalid identifier for debtor")
        return found
    code = params.text("DebtorCode")
    if code:
        by_code = store.find("debtors", "DebtorCode", code)
        if by_code is None:
            raise ApiFailure("Unknown client number")
        return by_code
    raise ApiFailure("Invalid identifier for debtor")


def creditor_for(store: Store, params: Params) -> Record:
    creditor_id = to_int(params.get("Creditor"))
    found = store.creditors.get(creditor_id) if creditor_id else None
    if found is None and not creditor_id and params.text("CreditorCode"):
        found = store.find("creditors", "CreditorCode", params.text("CreditorCode"))
    if found is None:
        raise ApiFailure("Invalid identifier for supplier")
    return found


# -- debtor --------------------------------------------------------------------------------------------------


def _debtor(store: Store, params: Params) -> Record:
    """debtor show/edit: api_controller::_get_debtor_id(Identifier), then by DebtorCode ("Unknown client
    number" when no debtor has it), else debtor::show's "Invalid identifier for client"."""
    debtor_id = to_int(params.get("Identifier"))
    found = store.debtors.get(debtor_id) if debtor_id else None
    if found is None and not debtor_id and params.text("DebtorCode"):
        found = store.find("debtors", "DebtorCode", params.text("DebtorCode"))
        if found is None:
            raise ApiFailure("Unknown client number")
    if found is None:
        raise ApiFailure("Invalid identifier for client")
    return found


def _debtor_hook(record: Record) -> dict[str, Any]:
    return {"id": record["Identifier"], "DebtorCode": record["DebtorCode"]}


def debtor_show(store: Store, params: Params) -> Outcome:
    return Outcome(key="debtor", payload=relation_show(_debtor(store, params)))


def debtor_list(store: Store, params: Params) -> Outcome:
    return list_records(store.debtors.values(), params, DEBTOR_LIST, lambda r: debtor_row(store.dialect, r))


def debtor_add(store: Store, params: Params) -> Outcome:
    reject_identifier(store, params)
    given = valid_params(params, DEBTOR)
    given.pop("Identifier", None)
    code = given.pop("DebtorCode", "") or store.next_code("debtor")
    if store.find("debtors", "DebtorCode", code) is not None:
        raise ApiFailure(f"Client number {code} is already in use")
    now = store.now()
    record: Record = {
        "Identifier": store.new_id("debtors"),
        "DebtorCode": code,
        "CompanyName": "",
        "CompanyNumber": "",
        "LegalForm": "",
        "TaxNumber": "",
        "Sex": "m",
        "Initials": "",
        "SurName": "",
        "Address": "",
        "ZipCode": "",
        "City": "",
        "Country": "NL",
        "EmailAddress": "",
        "PhoneNumber": "",
        "MobileNumber": "",
        "InvoiceMethod": 0,
        "InvoiceTerm": 14,
        "InvoiceAuthorisation": "no",
        # "auto": the tax rules decide; "yes": always the line's rate; "no": never VAT (btwcheck).
        "Taxable": "auto",
        # debtor add's defaults: a client-area login (username = DebtorCode) and the mailing list.
        "ActiveLogin": "yes",
        "Mailing": "yes",
        "Comment": "",
        "Created": now,
        "Modified": now,
    }
    record.update(given)
    store.debtors[record["Identifier"]] = record
    store.note_code("debtor", code)
    return Outcome(
        key="debtor",
        payload=relation_show(record),
        hooks=[("debtor_is_created", _debtor_hook(record))],
        record=record,
        changed=True,
    )


def debtor_edit(store: Store, params: Params) -> Outcome:
    record = _debtor(store, params)
    given = valid_params(params, DEBTOR)
    given.pop("Identifier", None)
    code = given.get("DebtorCode")
    if code is not None and not store.code_free("debtors", "DebtorCode", code, own_id=record["Identifier"]):
        raise ApiFailure(f"Client number {code} is already in use")
    record.update(given)
    record["Modified"] = store.now()
    if code is not None:
        store.note_code("debtor", code)
    return Outcome(
        key="debtor",
        payload=relation_show(record),
        hooks=[("debtor_is_edited", _debtor_hook(record))],
        record=record,
        changed=True,
    )


# -- creditor ------------------------------------------------------------------------------------------------


def _creditor(store: Store, params: Params) -> Record:
    creditor_id = to_int(params.get("Identifier"))
    found = store.creditors.get(creditor_id) if creditor_id else None
    if found is None and not creditor_id and params.text("CreditorCode"):
        found = store.find("creditors", "CreditorCode", params.text("CreditorCode"))
    if found is None:
        raise ApiFailure("Invalid identifier for supplier")
    return found


def creditor_show(store: Store, params: Params) -> Outcome:
    return Outcome(key="creditor", payload=relation_show(_creditor(store, params)))


def creditor_list(store: Store, params: Params) -> Outcome:
    return list_records(
        store.creditors.values(), params, CREDITOR_LIST, lambda r: creditor_row(store.dialect, r)
    )


def creditor_add(store: Store, params: Params) -> Outcome:
    reject_identifier(store, params)
    given = valid_params(params, CREDITOR)
    given.pop("Identifier", None)
    code = given.pop("CreditorCode", "") or store.next_code("creditor")
    if store.find("creditors", "CreditorCode", code) is not None:
        raise ApiFailure(f"Supplier number {code} is already in use")
    now = store.now()
    record: Record = {
        "Identifier": store.new_id("creditors"),
        "CreditorCode": code,
        "CompanyName": "",
        "CompanyNumber": "",
        "TaxNumber": "",
        "Sex": "m",
        "Initials": "",
        "SurName": "",
        "Address": "",
        "ZipCode": "",
        "City": "",
        "Country": "NL",
        "EmailAddress": "",
        "PhoneNumber": "",
        "AccountNumber": "",
        "Term": 30,
        "Authorisation": "no",
        "Comment": "",
        "Created": now,
        "Modified": now,
    }
    record.update(given)
    store.creditors[record["Identifier"]] = record
    store.note_code("creditor", code)
    # HostFact has no creditor hooks.
    return Outcome(key="creditor", payload=relation_show(record), record=record, changed=True)


def creditor_edit(store: Store, params: Params) -> Outcome:
    record = _creditor(store, params)
    given = valid_params(params, CREDITOR)
    given.pop("Identifier", None)
    code = given.get("CreditorCode")
    if code is not None and not store.code_free(
        "creditors", "CreditorCode", code, own_id=record["Identifier"]
    ):
        raise ApiFailure(f"Supplier number {code} is already in use")
    record.update(given)
    record["Modified"] = store.now()
    if code is not None:
        store.note_code("creditor", code)
    return Outcome(key="creditor", payload=relation_show(record), record=record, changed=True)
