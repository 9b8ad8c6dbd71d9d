"""Partial credits from HostFact's back office, on both routes and into both target dialects.

HostFact's back office credits part of an invoice (invoice::createCreditInvoice, "partly"): a Status 8 credit
invoice of the chosen lines, the original kept, its AmountPaid raised by the credit when it was sent or partly
paid. The only hook is the credit invoice's invoice_is_created (with the original, as factsync's hooks.php
adds it), plus invoice_is_paid when the credit covers what was open. The target must end with the credit note
(number, date, negated lines, total) and the original's mirror with the source's open amount, the credit
booked so a person can tell it from money received, nothing doubled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from redis.asyncio import Redis

from tasks.adapters import credit_payment_note
from tests.stack import Stack, running_stack
from tests.test_operate import cli, write_config

# HostFact's seed invoice: 150 + 15 excl, 181.50 + 18.15 = 199.65 incl.
LINES = [
    {"Description": "Setupfee", "PriceExcl": "150", "TaxPercentage": "21"},
    {"Description": "Domain example.com", "Number": "2", "PriceExcl": "7.5", "TaxPercentage": "21"},
]
ROUTES = [("sales", "wefact"), ("sales", "hostfact"), ("purchase", "wefact"), ("purchase", "hostfact")]


@pytest.fixture(params=ROUTES, ids=["-".join(route) for route in ROUTES])
async def stack(request: pytest.FixtureRequest, redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    ledger, dialect = request.param
    async with running_stack(
        redis_url, target_dialect=dialect, ledger=ledger, creditors={"DB0001": "CD0001"}
    ) as stack:
        if ledger == "purchase":
            stack.target.add_creditor(CompanyName="Our supplier B.V.")
        stack.hostfact.add_debtor(CompanyName="Company X", City="Amsterdam", Country="NL")
        yield stack


def purchase_route(stack: Stack) -> bool:
    return "purchase" in stack.settings.routes


def documents(stack: Stack) -> dict[int, dict[str, Any]]:
    return stack.target.creditinvoices if purchase_route(stack) else stack.target.invoices


def marked(stack: Stack, source_id: int) -> list[dict[str, Any]]:
    marker = f"[factsync:hostfact:{source_id}]"
    return [r for r in documents(stack).values() if r.get("ReferenceNumber", r.get("Comment")) == marker]


def mirror(stack: Stack, source_id: int) -> dict[str, Any]:
    found = [r for r in marked(stack, source_id) if r["Status"] != 8]
    assert len(found) == 1, f"expected one mirror of invoice {source_id}, found {len(found)}"
    return found[0]


def open_amount(record: dict[str, Any], *, paid: int) -> Decimal:
    """What is still to be paid: nothing once paid (a paid HostFact purchase invoice shows 0 paid)."""
    if record["Status"] in (paid, 9):
        return Decimal("0.00")
    return Decimal(record["AmountIncl"]) - Decimal(record["AmountPaid"])


def assert_open_amounts_agree(stack: Stack, source_id: int) -> Decimal:
    source = stack.hostfact.invoice(source_id)
    target = mirror(stack, source_id)
    wanted = open_amount(source, paid=4)
    assert open_amount(target, paid=3 if purchase_route(stack) else 4) == wanted, (source, target)
    return wanted


def assert_credit_note(stack: Stack, credit: dict[str, Any]) -> dict[str, Any]:
    """The target holds exactly one credit note for the source's credit invoice: its number, date, total."""
    (note,) = marked(stack, credit["Identifier"])
    assert note["Status"] == 8
    assert note["InvoiceCode"] == credit["InvoiceCode"]
    assert note["Date"] == credit["Date"]
    assert note["AmountIncl"] == credit["AmountIncl"] < 0
    if purchase_route(stack):
        assert note["CreditorCode"] == "CD0001"
    else:
        assert note["DebtorCode"] == credit["DebtorCode"]
        descriptions = sorted(line["Description"] for line in note["InvoiceLines"])
        assert descriptions == sorted(line["Description"] for line in credit["InvoiceLines"])
        # HostFact's CREDIT_TEXT line names the original on the credit note.
        assert any("Corresponderende factuur" in text for text in descriptions)
    return note


def assert_credit_booked_as_such(stack: Stack, source_id: int, credit: dict[str, Any]) -> None:
    """A credit booked as a part payment says so, where the target has a place for it."""
    amount = -credit["AmountIncl"]
    payments = [
        call.params
        for call in stack.target.calls
        if call.action == "partpayment" and Decimal(str(call.params["AmountPaid"])) == amount
    ]
    assert len(payments) == 1, payments
    if purchase_route(stack):
        return  # purchase invoices have no free text besides the marker
    if stack.target.store.dialect == "wefact":
        assert payments[0]["PaymentMethod"] == "other"
    note = credit_payment_note(credit["InvoiceCode"], amount)
    assert note in mirror(stack, source_id)["Comment"]


async def new_invoice(stack: Stack) -> int:
    answer = await stack.call("invoice", "add", DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
    await stack.settled()
    return int(answer["invoice"]["Identifier"])


def line_ids(stack: Stack, invoice_id: int) -> list[int]:
    return [line["Identifier"] for line in stack.hostfact.invoice(invoice_id)["InvoiceLines"]]


def all_done(events: list[Any]) -> None:
    for event in events:
        assert event.status == "done", (event.action, event.status, event.reason, event.outcomes)


async def test_a_partial_credit_before_the_first_sync(stack: Stack) -> None:
    # Made before factsync was installed: the credit's hook is the first factsync hears of the invoice.
    invoice = stack.hostfact.add_invoice(DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
    setup, _ = line_ids(stack, invoice["Identifier"])

    credit = await stack.hostfact.credit_partly(invoice["Identifier"], {setup: 1})
    events = await stack.settled()

    (created,) = events
    assert created.action == "invoice_is_created" and created.payload["CorrespondingInvoice"] == 1
    all_done(events)
    assert stack.hostfact.invoice(invoice["Identifier"])["Status"] == 3
    assert_credit_note(stack, credit)
    assert assert_open_amounts_agree(stack, invoice["Identifier"]) == Decimal("18.15")
    assert_credit_booked_as_such(stack, invoice["Identifier"], credit)


async def test_a_partial_credit_after_the_mirror_settled_needs_no_hook_for_the_original(
    stack: Stack,
) -> None:
    invoice_id = await new_invoice(stack)
    all_done(await stack.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="5.25"))
    _, domain = line_ids(stack, invoice_id)

    # One of the two domain years: 7.50 excl, 9.08 incl.
    credit = await stack.hostfact.credit_partly(invoice_id, {domain: 1})
    events = await stack.settled()

    all_done(events)
    assert [e.action for e in events].count("invoice_is_created") == 2, "no hook for the original itself"
    assert credit["AmountIncl"] == Decimal("-9.08")
    assert_credit_note(stack, credit)
    assert assert_open_amounts_agree(stack, invoice_id) == Decimal("185.32")
    assert_credit_booked_as_such(stack, invoice_id, credit)


async def test_a_partial_credit_covering_what_was_open_pays_the_invoice(stack: Stack) -> None:
    invoice_id = await new_invoice(stack)
    all_done(await stack.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="181.50"))
    _, domain = line_ids(stack, invoice_id)

    credit = await stack.hostfact.credit_partly(invoice_id, {domain: 2})
    events = await stack.settled()

    all_done(events)
    assert "invoice_is_paid" in [e.action for e in events]
    assert stack.hostfact.invoice(invoice_id)["Status"] == 4
    assert mirror(stack, invoice_id)["Status"] == (3 if purchase_route(stack) else 4)
    assert_credit_note(stack, credit)
    assert_open_amounts_agree(stack, invoice_id)
    if not purchase_route(stack):
        assert_credit_booked_as_such(stack, invoice_id, credit)


async def test_a_partial_credit_of_a_paid_invoice_is_a_credit_note_and_no_payment(stack: Stack) -> None:
    invoice_id = await new_invoice(stack)
    all_done(await stack.act("invoice", "markaspaid", Identifier=invoice_id))
    setup, _ = line_ids(stack, invoice_id)

    credit = await stack.hostfact.credit_partly(invoice_id, {setup: 1})
    all_done(await stack.settled())

    # HostFact leaves a paid original as it is: the credit is owed to the customer, not settled.
    assert stack.hostfact.invoice(invoice_id)["Status"] == 4
    assert_credit_note(stack, credit)
    assert_open_amounts_agree(stack, invoice_id)
    assert stack.target.count_calls(action="partpayment") == 0


async def test_a_partial_then_a_full_credit(stack: Stack) -> None:
    invoice_id = await new_invoice(stack)
    setup, _ = line_ids(stack, invoice_id)
    partial = await stack.hostfact.credit_partly(invoice_id, {setup: 1})
    all_done(await stack.settled())

    answer = await stack.call("invoice", "credit", Identifier=invoice_id)
    all_done(await stack.settled())

    assert_credit_note(stack, partial)
    notes = [r for r in documents(stack).values() if r["Status"] == 8]
    assert len(notes) == 2, "the partial credit's note and the full credit's"
    full = next(r for r in notes if r["InvoiceCode"] != partial["InvoiceCode"])
    assert full["AmountIncl"] == Decimal(answer["invoice"]["AmountIncl"]) == Decimal("-199.65")
    if not (purchase_route(stack) and stack.target.store.dialect == "wefact"):
        # WeFact's purchase invoices have no cancelled status: the credit invoice offsets the original.
        assert mirror(stack, invoice_id)["Status"] == 9


@pytest.mark.parametrize("dialect", ["wefact", "hostfact"])
async def test_a_full_credit_whose_answer_was_lost_gives_up_the_number_a_partial_credit_needs(
    redis: Redis, redis_url: str, dialect: Literal["wefact", "hostfact"]
) -> None:
    """The target's `invoice credit` numbers the full credit's invoice from its own sequence (F0003 here:
    the mirror is F0001, the first partial credit's note F0002), and its answer is lost, so that run ends
    before giving it the source's number (F0004). By the next run the source's second partial credit, F0003,
    is known: the target-made credit invoice gets its number before the note is made, or the note would wait
    for it forever."""
    retry = {"max_tries": 8, "base_delay": 0.5, "max_delay": 1.0, "max_span": 60}
    async with running_stack(redis_url, target_dialect=dialect, retry=retry) as stack:
        stack.hostfact.add_debtor(CompanyName="Company X", City="Amsterdam", Country="NL")
        invoice_id = await new_invoice(stack)
        setup, domain = line_ids(stack, invoice_id)
        first = await stack.hostfact.credit_partly(invoice_id, {setup: 1})
        all_done(await stack.settled())
        # The second partial credit, its hook not sent yet (HostFact's request still runs).
        made = stack.hostfact.backoffice("credit_partly", identifier=invoice_id, numbers={domain: 1})
        stack.target.faults.inject("lost_answer", controller="invoice", action="credit", times=1)

        full = (await stack.call("invoice", "credit", Identifier=invoice_id))["invoice"]
        deadline = asyncio.get_running_loop().time() + 10
        while not stack.target.count_calls("invoice", "credit"):
            assert asyncio.get_running_loop().time() < deadline, "the target was never asked to credit"
            await asyncio.sleep(0.01)
        await stack.hostfact.fire(made)  # now the second partial credit's hook: before the retry
        all_done(await stack.settled(within=30))

        second = made.record
        assert second is not None
        assert (first["InvoiceCode"], second["InvoiceCode"], full["InvoiceCode"]) == (
            "F0002",
            "F0003",
            "F0004",
        )
        for credit in (first, second):
            assert_credit_note(stack, credit)
        codes = sorted(r["InvoiceCode"] for r in stack.target.invoices.values() if r["Status"] == 8)
        assert codes == ["F0002", "F0003", "F0004"]
        assert [c.applied for c in stack.target.calls if c.action == "credit"] == [True]


async def test_hooks_delivered_twice_and_out_of_order_double_nothing(stack: Stack) -> None:
    invoice_id = await new_invoice(stack)
    all_done(await stack.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="10"))
    setup, domain = line_ids(stack, invoice_id)
    first = await stack.hostfact.credit_partly(invoice_id, {domain: 1})
    second = await stack.hostfact.credit_partly(invoice_id, {setup: Decimal("0.5")})
    events = await stack.settled()
    all_done(events)
    writes = stack.target.count_calls(writes_only=True)

    # Every hook again, newest first; then HostFact's own re-deliveries of the credit hooks.
    for event in sorted(events, key=lambda e: e.id, reverse=True):
        await stack.store.requeue(event.id, by="test")
    all_done(await stack.settled())
    for delivery in [d for d in stack.hostfact.hooks_fired if "CorrespondingInvoice" in d.data][::-1]:
        await stack.hostfact.hooks.deliver([delivery])
    all_done(await stack.settled())

    assert stack.target.count_calls(writes_only=True) == writes, "nothing written twice"
    assert_credit_note(stack, first)
    assert_credit_note(stack, second)
    assert assert_open_amounts_agree(stack, invoice_id) == Decimal("199.65") - 10 - Decimal("9.08") - Decimal(
        "90.75"
    )
    assert_credit_booked_as_such(stack, invoice_id, first)
    assert_credit_booked_as_such(stack, invoice_id, second)


@pytest.mark.parametrize("dialect", ["wefact", "hostfact"])
async def test_audit_finds_a_missing_credit_note_and_fix_makes_it(
    redis: Redis, redis_url: str, tmp_path: Path, dialect: str
) -> None:
    async with running_stack(redis_url, target_dialect=dialect) as stack:  # type: ignore[arg-type]
        stack.hostfact.add_debtor(CompanyName="Company X")
        invoice_id = await new_invoice(stack)
        setup, _ = line_ids(stack, invoice_id)
        credit = await stack.hostfact.credit_partly(invoice_id, {setup: 1})
        all_done(await stack.settled())
        (note,) = marked(stack, credit["Identifier"])
        del stack.target.invoices[note["Identifier"]]  # deleted by hand in the target
        config = write_config(stack, tmp_path)

        found = await cli(config, "audit", "--route", "sales", "--json")
        assert found.code == 3, found.err
        (drift,) = found.json()["drifts"]
        assert drift["code"] == "F0001" and drift["fixable"] is True
        assert drift["differences"] == [{"field": "credit note", "source": "F0002", "target": "missing"}]

        fixed = await cli(config, "audit", "--route", "sales", "--fix", "--json")
        assert fixed.code == 0, fixed.out + fixed.err
        assert fixed.json()["fix"]["outcomes"] == {"done": 1}
        assert_credit_note(stack, credit)
        assert_open_amounts_agree(stack, invoice_id)
        clean = await cli(config, "audit", "--route", "sales")
        assert clean.code == 0 and "1 invoice(s) compared, 0 drifted" in clean.out, clean.out
