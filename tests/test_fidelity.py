"""The defects found by reading the real HostFact 6.0.2 source and WeFact's documentation, end to end.

Each test runs the whole factsync against simulated administrations that behave as the real ones do
(docs/api-fidelity.md): Dutch answers, "Unknown client number", subscription lines and discounts in the
totals, purchase lines without discounts, and targets that apply their own VAT, discount and direct-debit
rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, Literal

import pytest
from redis.asyncio import Redis

from tasks.audit import audit_route
from tasks.client import ApiClient
from tests.routes import DIALECTS
from tests.stack import Stack, running_stack
from worker.idmap import RedisIdMap
from worker.store import Event

DEBTOR = {
    "CompanyName": "Company X",
    "SurName": "Jackson",
    "Address": "Keizersgracht 100",
    "ZipCode": "1015 AA",
    "City": "Amsterdam",
    "Country": "NL",
}
# "€7.50 a month × 12": 90.00 excl, 108.90 incl.
SUBSCRIPTION = {
    "Description": "Hosting Basic",
    "PriceExcl": "7.50",
    "TaxPercentage": "21",
    "PeriodicType": "period",
    "Periods": 12,
    "Periodic": "m",
    "StartPeriod": "2026-01-01",
}
DISCOUNTED = {"Description": "Setup", "Number": "3", "PriceExcl": "33.33", "DiscountPercentage": "15"}
LOW_RATE = {"Description": "E-book", "PriceExcl": "19.99", "TaxPercentage": "9"}


async def invoice(stack: Stack, lines: list[dict[str, Any]], **fields: Any) -> int:
    if not stack.hostfact.debtors:
        stack.hostfact.add_debtor(**DEBTOR)
    answer = await stack.call(
        "invoice", "add", DebtorCode="DB0001", InvoiceLines=lines, **({"Status": 2} | fields)
    )
    await stack.settled()
    return int(answer["invoice"]["Identifier"])


def by_marker(records: dict[int, dict[str, Any]], source_id: int) -> list[dict[str, Any]]:
    marker = f"[factsync:hostfact:{source_id}]"
    # WeFact's purchase invoices carry it in Comment (they have no ReferenceNumber).
    return [
        r
        for r in records.values()
        if r.get("ReferenceNumber", r.get("Comment")) == marker and r["Status"] != 8
    ]


def failed(events: list[Event]) -> list[Event]:
    return [event for event in events if event.status == "failed"]


def all_done(events: list[Event]) -> None:
    for event in events:
        assert event.status in ("done", "ignored"), (event.action, event.status, event.reason)


# -- 1. Dutch answers ----------------------------------------------------------------------------------------


async def test_a_mirror_gone_from_the_target_is_found_again_by_its_marker(sales: Stack, redis: Redis) -> None:
    """The id map points at a document the target no longer knows ("Ongeldige identifier voor factuur"):
    the sync must find the mirror by its marker, not fail on a Dutch message it cannot read."""
    source_id = await invoice(sales, [LOW_RATE])
    (mirror,) = by_marker(sales.target.invoices, source_id)
    await RedisIdMap(redis, "sales").put("invoice", str(source_id), "99999")

    events = await sales.act("invoice", "partpayment", Identifier=source_id, AmountPaid="5")

    all_done(events)
    assert mirror["AmountPaid"] == Decimal("5.00")
    assert await RedisIdMap(redis, "sales").get("invoice", str(source_id)) == str(mirror["Identifier"])


async def test_a_number_taken_by_someone_else_fails_with_a_reason_a_person_reads(sales: Stack) -> None:
    """The target already has an invoice F0001 that factsync did not make: the event fails naming that,
    whatever language the refusal ("Ongeldig factuurnummer") came in."""
    debtor = sales.target.add_debtor(DebtorCode="DB0001", **DEBTOR)
    sales.target.add_invoice(
        Debtor=debtor["Identifier"], Status=2, InvoiceCode="F0001", InvoiceLines=[{"Description": "x"}]
    )
    await invoice(sales, [LOW_RATE])

    (refused,) = failed(await sales.settled())
    assert "F0001 is already used in target by a document factsync did not make" in refused.reason
    assert len(sales.target.invoices) == 1


def moved_aside_after_a_refusal(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, *, debtor: int, code: str, action: str
) -> dict[str, Any]:
    """A credit invoice factsync had the target make for another document, holding ``code``, which gets its
    own source number (F0091) right after the target refuses the next ``invoice <action>``: what another
    document's sync does between a refusal and factsync's look for the holder."""
    held = stack.target.add_invoice(
        Debtor=debtor,
        Status=8,
        InvoiceCode=code,
        ReferenceNumber="[factsync:hostfact:90]",
        InvoiceLines=[{"Description": "x", "PriceExcl": "-10"}],
    )
    execute = stack.target.execute

    def renumbered_after_the_refusal(controller: str, called: str, params: Any) -> Any:
        try:
            return execute(controller, called, params)
        finally:
            if (controller, called) == ("invoice", action) and held["InvoiceCode"] == code:
                stack.target.invoices[held["Identifier"]]["InvoiceCode"] = "F0091"

    monkeypatch.setattr(stack.target, "execute", renumbered_after_the_refusal)
    return held


async def test_a_number_freed_between_the_refusal_and_the_lookup_is_added_once_more(
    sales: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credit invoice the target numbered itself (WeFact's `invoice credit` takes its next number) holds
    F0001 when the add is refused ("Ongeldig factuurnummer": invoice_api_controller::add, is_free), and has
    its source number by the time factsync looks for the holder (another document's sync renumbered it).
    Nothing was made, the number is free: the mirror is added, once, and the event is done."""
    debtor = sales.target.add_debtor(DebtorCode="DB0001", **DEBTOR)
    moved_aside_after_a_refusal(sales, monkeypatch, debtor=debtor["Identifier"], code="F0001", action="add")
    source_id = await invoice(sales, [LOW_RATE])

    all_done(await sales.settled())
    (mirror,) = by_marker(sales.target.invoices, source_id)
    assert mirror["InvoiceCode"] == "F0001"
    adds = [c for c in sales.target.calls if (c.controller, c.action) == ("invoice", "add")]
    assert [c.applied for c in adds] == [False, True]


async def test_a_credit_invoice_renumbered_to_a_number_freed_meanwhile_gets_it(
    sales: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target's `invoice credit` numbers the credit invoice from the target's own sequence; factsync then
    gives it the source credit's number (invoice edit). That number is held by another factsync credit
    invoice when the edit is refused ("Factuurnummer ... is al in gebruik bij een andere factuur") and free
    by the time factsync looks (its own sync renumbered it): the edit is made once more, and the event is
    done rather than failed."""
    source_id = await invoice(sales, [LOW_RATE])
    (mirror,) = by_marker(sales.target.invoices, source_id)
    # F0002, the source's next number and so its credit invoice's, is held in the target by a credit
    # invoice factsync made for another document and has not renumbered yet.
    other = moved_aside_after_a_refusal(
        sales, monkeypatch, debtor=mirror["Debtor"], code="F0002", action="edit"
    )
    answer = await sales.call("invoice", "credit", Identifier=source_id)

    all_done(await sales.settled())
    assert answer["invoice"]["InvoiceCode"] == "F0002"
    (credit,) = [r for r in sales.target.invoices.values() if r["Status"] == 8 and r is not other]
    assert credit["InvoiceCode"] == "F0002"
    renumbering = [
        c.applied
        for c in sales.target.calls
        if (c.controller, c.action) == ("invoice", "edit") and c.params.get("InvoiceCode") == "F0002"
    ]
    assert renumbering == [False, True]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_two_credits_mirrored_in_the_other_order_swap_their_numbers(
    redis: Redis, redis_url: str, dialect: Literal["wefact", "hostfact"]
) -> None:
    """The source credits X (credit invoice F0003), then Y (F0004); the target's `invoice credit` for X is
    slow, so Y's is made first and the target numbers them the other way round (Y's F0003, X's F0004), and
    Y's renumbering is slower still. Each wants the number the other holds: one steps aside (a parking
    number the target's own numbering ignores: class/invoice.php newInvoiceCode counts only codes with
    digits alone after the prefix), and both end with their source numbers, every event done. (Retries as
    patient as a production's, within seconds: the test's usual four tries end before the slow edit.)"""
    retry = {"max_tries": 12, "base_delay": 0.1, "max_delay": 0.5, "max_span": 60}
    async with running_stack(redis_url, target_dialect=dialect, retry=retry) as sales:
        x = await invoice(sales, [LOW_RATE])
        y = await invoice(sales, [LOW_RATE])
        sales.target.faults.inject("latency", controller="invoice", action="credit", seconds=1.5, times=1)

        credit_x = (await sales.call("invoice", "credit", Identifier=x))["invoice"]
        deadline = asyncio.get_running_loop().time() + 10
        while sales.target.count_calls("invoice", "credit") == 0:
            assert asyncio.get_running_loop().time() < deadline, "X's credit never reached the target"
            await asyncio.sleep(0.02)
        # The next edit is Y's renumbering (X's sync waits on its credit): applied after X's credit is made.
        sales.target.faults.inject("latency", controller="invoice", action="edit", seconds=3, times=1)
        credit_y = (await sales.call("invoice", "credit", Identifier=y))["invoice"]

        all_done(await sales.settled(within=30))
        assert (credit_x["InvoiceCode"], credit_y["InvoiceCode"]) == ("F0003", "F0004")
        applied = [
            c for c in sales.target.calls if (c.controller, c.action) == ("invoice", "credit") and c.applied
        ]
        assert len(applied) == 2
        credits = {
            r["ReferenceNumber"]: r["InvoiceCode"] for r in sales.target.invoices.values() if r["Status"] == 8
        }
        assert credits == {f"[factsync:hostfact:{x}]": "F0003", f"[factsync:hostfact:{y}]": "F0004"}


# -- 2. a debtor the target lacks ---------------------------------------------------------------------------


async def test_the_first_invoice_of_a_new_customer_creates_an_inert_debtor(sales: Stack) -> None:
    """HostFact answers "Unknown client number" for a missing DebtorCode (api_controller::_get_debtor_id);
    factsync looks debtors up by list, and makes them with VAT as the lines say and no direct debit."""
    source_id = await invoice(sales, [LOW_RATE])

    all_done(await sales.settled())
    (debtor,) = sales.target.debtors.values()
    if sales.target.dialect == "wefact":
        # WeFact documents none of these on debtor add; its direct debit is off unless asked.
        assert debtor["DebtorCode"] == "DB0001"
        return
    inert = ("DebtorCode", "Taxable", "InvoiceAuthorisation", "ActiveLogin", "Mailing")
    assert [debtor[key] for key in inert] == ["DB0001", "yes", "no", "no", "no"]
    assert len(by_marker(sales.target.invoices, source_id)) == 1


# -- 3. subscription lines, line and invoice discounts, prices incl VAT -------------------------------------


@pytest.mark.parametrize("vat_calc_method", ["excl", "incl"])
async def test_subscription_lines_and_discounts_arrive_with_the_sources_totals(
    sales: Stack, vat_calc_method: str
) -> None:
    source_id = await invoice(
        sales, [SUBSCRIPTION, DISCOUNTED, LOW_RATE], Discount="10", VatCalcMethod=vat_calc_method
    )
    source = sales.hostfact.invoice(source_id)
    assert source["InvoiceLines"][0]["Periods"] == 12

    events = await sales.act("invoice", "partpayment", Identifier=source_id, AmountPaid=source["AmountIncl"])

    all_done(events)
    (mirror,) = by_marker(sales.target.invoices, source_id)
    for key in ("AmountExcl", "AmountTax", "AmountIncl", "AmountPaid", "Discount", "VatCalcMethod"):
        assert mirror[key] == source[key], key
    assert mirror["Status"] == 4
    # Never a subscription in the target (it would bill the customer again): one line of all 12 months.
    line = mirror["InvoiceLines"][0]
    assert (line["Description"], line["PriceExcl"]) == ("Hosting Basic (12 maanden vanaf 2026-01-01)", 90)
    assert (line["Periods"], line["Periodic"], line["PeriodicID"]) == (1, "", 0)
    assert not sales.target.store.subscriptions and sales.hostfact.store.subscriptions
    await assert_no_drift(sales, "sales")


async def test_a_subscription_line_alone_is_not_twelve_times_too_small(sales: Stack) -> None:
    source_id = await invoice(sales, [SUBSCRIPTION])
    (mirror,) = by_marker(sales.target.invoices, source_id)
    assert mirror["AmountIncl"] == Decimal("108.90")
    assert mirror["InvoiceMethod"] == 1, "out of the target's reminder run (cronjob.php)"


# -- 4. purchase lines ---------------------------------------------------------------------------------------


async def test_purchase_lines_carry_discounts_and_periods_in_what_they_can_hold(purchase: Stack) -> None:
    """creditinvoice lines read only Number, Description, PriceExcl and TaxPercentage: a discount is a line
    of its own, periods are in the price, and the total is the source's. A later hook adds nothing."""
    source_id = await invoice(purchase, [SUBSCRIPTION, DISCOUNTED, LOW_RATE], Discount="10")
    source = purchase.hostfact.invoice(source_id)
    (mirror,) = by_marker(purchase.target.creditinvoices, source_id)
    assert mirror["AmountIncl"] == source["AmountIncl"]
    assert all("DiscountPercentage" not in line for line in mirror["InvoiceLines"])
    lines = len(mirror["InvoiceLines"])

    events = await purchase.act("invoice", "edit", Identifier=source_id, Comment="touched")
    events = await purchase.act("invoice", "partpayment", Identifier=source_id, AmountPaid="10")

    all_done(events)
    assert len(mirror["InvoiceLines"]) == lines, "a later hook added lines"
    assert mirror["AmountPaid"] == Decimal("10.00")
    assert purchase.target.count_calls("creditinvoiceline", "add") == 0
    await assert_no_drift(purchase, "purchase")


# -- 5. the target acts on what it receives ----------------------------------------------------------------


async def test_mirrors_are_inert_in_a_target_with_vat_discount_and_direct_debit_rules(sales: Stack) -> None:
    rules = sales.target.store.rules
    rules.vat, rules.discount, rules.direct_debit = True, Decimal(5), True
    # A Belgian company with a VAT number: the target's rules would make its lines 0 %.
    sales.hostfact.add_debtor(
        **(DEBTOR | {"Country": "BE", "TaxNumber": "BE0123456789"}), InvoiceAuthorisation="yes"
    )
    source_id = await invoice(sales, [LOW_RATE, DISCOUNTED], Authorisation="yes")
    source = sales.hostfact.invoice(source_id)

    all_done(await sales.settled())
    (mirror,) = by_marker(sales.target.invoices, source_id)
    assert [line["TaxPercentage"] for line in mirror["InvoiceLines"]] == [Decimal(9), Decimal(21)]
    assert (mirror["Discount"], mirror["IgnoreDiscount"], mirror["AmountIncl"]) == (
        Decimal(0),
        "yes",
        source["AmountIncl"],
    )
    assert mirror["Authorisation"] == "no" and not sales.target.store.sdd_batch


@pytest.fixture
async def hostfact_sales(redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    async with running_stack(redis_url, target_dialect="hostfact", ledger="sales") as stack:
        yield stack


async def test_a_target_that_changes_the_lines_fails_the_event_before_writing_again(
    hostfact_sales: Stack,
) -> None:
    """The debtor already exists in the HostFact target, made by a person, and its VAT rules (btwcheck) turn
    9 % into 0 %: the mirror's lines are not what was sent. factsync stops with the difference instead of
    adding lines, and later hooks write nothing while source and mirror stay as they are."""
    sales = hostfact_sales
    sales.target.store.rules.vat = True
    sales.target.add_debtor(DebtorCode="DB0001", **(DEBTOR | {"Country": "US"}))
    await invoice(sales, [LOW_RATE])

    (stopped,) = failed(await sales.settled())
    assert "did not take CreateMirror" in stopped.reason
    assert "lines: source 1× E-book à 19.99 (9%)" in stopped.reason
    assert sales.target.count_calls("invoiceline") == 0
    await sales.act("invoice", "edit", Identifier=1, Comment="again")
    assert sales.target.count_calls("invoiceline") == 0, "a later hook must not add lines either"


async def assert_no_drift(stack: Stack, route_name: str) -> None:
    route = stack.settings.route(route_name)
    async with (
        ApiClient(stack.settings.source("hostfact")) as source,
        ApiClient(stack.settings.target("target")) as target,
    ):
        report = await audit_route(
            route, source=source, target=target, ids=RedisIdMap(stack.store.redis, route_name)
        )
    assert report.drifts == [], report.drifts
