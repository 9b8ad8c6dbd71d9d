"""Every hook of the seed, on both routes and into both target dialects: the target ends as the source is.

The invoices are the seeds' own examples (shared/seeds/): HostFact's part payment of 5.25 on 199.65,
WeFact's 25 on 277.86 and its invoiceline add, and HostFact's purchase invoice 2018-6422.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from tasks.simulator import SimAdministration
from tests.stack import Stack, running_stack

HOSTFACT_SEED_LINES = [
    {"Description": "Setupfee", "PriceExcl": "150", "TaxPercentage": "21"},
    {"Description": "Domain example.com", "PriceExcl": "15", "TaxPercentage": "21"},
]
WEFACT_SEED_LINES = [
    {
        "Description": "Werkzaamheden gebaseerd op uurtarief",
        "Number": "2",
        "PriceExcl": "100",
        "TaxPercentage": "21",
    },
    {
        "Description": "Reiskosten à € 0,19 per km",
        "Number": "155",
        "PriceExcl": "0.19",
        "TaxPercentage": "21",
    },
    {"Description": "Reiskosten à € 0,19 per km", "Number": "1", "PriceExcl": "0.19", "TaxPercentage": "21"},
]
WEFACT_ADDED_LINE = {
    "Description": "Werkzaamheden gebaseerd op uurtarief",
    "PriceExcl": "100",
    "TaxPercentage": "21",
}
PURCHASE_SEED_LINES = [
    {"Description": "SLA contract #2", "Number": "1", "PriceExcl": "125", "TaxPercentage": "21"},
    {"Description": "Domains .com", "Number": "3", "PriceExcl": "12.5", "TaxPercentage": "21"},
]
SALES_STATUS_IN_TARGET = {1: 2, 2: 2, 3: 3, 4: 4, 9: 9}
PURCHASE_STATUS_IN_TARGET = {1: 1, 2: 1, 3: 2, 4: 3, 9: 9}


def lines_of(record: dict[str, Any]) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    return sorted(
        (
            line["Description"],
            Decimal(line["Number"]),
            Decimal(line["PriceExcl"]),
            Decimal(line["TaxPercentage"]),
        )
        for line in record["InvoiceLines"]
    )


def sales_mirror(stack: Stack, source: dict[str, Any]) -> dict[str, Any]:
    marker = f"[factsync:hostfact:{source['Identifier']}]"
    mirrors = [
        r for r in stack.target.invoices.values() if r["ReferenceNumber"] == marker and r["Status"] != 8
    ]
    assert len(mirrors) == 1, f"expected one mirror of {source['InvoiceCode']}, found {len(mirrors)}"
    return mirrors[0]


def assert_sales_mirror(stack: Stack, source_id: int) -> dict[str, Any]:
    source = stack.hostfact.invoice(source_id)
    mirror = sales_mirror(stack, source)
    assert mirror["InvoiceCode"] == source["InvoiceCode"]
    assert mirror["Date"] == source["Date"]
    assert mirror["Term"] == source["Term"]
    assert mirror["Status"] == SALES_STATUS_IN_TARGET[source["Status"]]
    assert mirror["DebtorCode"] == source["DebtorCode"]
    assert (mirror["AmountExcl"], mirror["AmountTax"], mirror["AmountIncl"]) == (
        source["AmountExcl"],
        source["AmountTax"],
        source["AmountIncl"],
    )
    assert mirror["AmountPaid"] == source["AmountPaid"]
    assert lines_of(mirror) == lines_of(source)
    return mirror


def purchase_mirror(stack: Stack, source: dict[str, Any]) -> dict[str, Any]:
    marker = f"[factsync:hostfact:{source['Identifier']}]"
    # WeFact's purchase invoices have no ReferenceNumber: the marker is in Comment.
    mirrors = [
        r
        for r in stack.target.creditinvoices.values()
        if r.get("ReferenceNumber", r.get("Comment")) == marker and r["Status"] != 8
    ]
    assert len(mirrors) == 1, (
        f"expected one purchase invoice for {source['InvoiceCode']}, found {len(mirrors)}"
    )
    return mirrors[0]


@pytest.fixture
async def company_x(redis: Redis) -> dict[str, Any]:
    return {
        "CompanyName": "Company X",
        "Initials": "John",
        "SurName": "Jackson",
        "Address": "Keizersgracht 100",
        "ZipCode": "1015 AA",
        "City": "Amsterdam",
        "Country": "NL",
        "EmailAddress": "info@company.com",
    }


async def new_invoice(
    stack: Stack, debtor: dict[str, Any], lines: list[dict[str, Any]], **fields: Any
) -> int:
    if not stack.hostfact.debtors:
        stack.hostfact.add_debtor(**debtor)
    answer = await stack.call(
        "invoice", "add", DebtorCode="DB0001", InvoiceLines=lines, **({"Status": 2} | fields)
    )
    await stack.settled()
    return int(answer["invoice"]["Identifier"])


def done(events: list[Any], action: str) -> Any:
    matching = [e for e in events if e.action == action]
    assert matching, f"no {action} event"
    for event in matching:
        assert event.status == "done", (event.status, event.reason, event.outcomes)
    return matching[-1]


# --- sales route ---------------------------------------------------------------------------------------


async def test_created_makes_the_mirror_and_its_debtor(sales: Stack, company_x: dict[str, Any]) -> None:
    invoice_id = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)

    done(await sales.settled(), "invoice_is_created")
    mirror = assert_sales_mirror(sales, invoice_id)
    assert str(mirror["AmountIncl"]) == "199.65"
    (debtor,) = sales.target.debtors.values()
    assert debtor["DebtorCode"] == "DB0001"
    assert (debtor["CompanyName"], debtor["SurName"], debtor["City"]) == ("Company X", "Jackson", "Amsterdam")


async def test_edited_brings_header_and_lines_in_step(sales: Stack, company_x: dict[str, Any]) -> None:
    invoice_id = await new_invoice(sales, company_x, WEFACT_SEED_LINES)

    await sales.act("invoiceline", "add", Identifier=invoice_id, InvoiceLines=[WEFACT_ADDED_LINE])
    mirror = assert_sales_mirror(sales, invoice_id)
    assert str(mirror["AmountIncl"]) == "398.86"  # the seed's total after its invoiceline add

    first_line = sales.hostfact.invoice(invoice_id)["InvoiceLines"][0]["Identifier"]
    await sales.act("invoiceline", "delete", Identifier=invoice_id, InvoiceLines=[{"Identifier": first_line}])
    events = await sales.act("invoice", "edit", Identifier=invoice_id, Term=30)
    done(events, "invoice_is_edited")
    mirror = assert_sales_mirror(sales, invoice_id)
    assert mirror["Term"] == 30


async def test_sent_gives_a_draft_its_mirror_once_it_has_a_number(
    sales: Stack, company_x: dict[str, Any]
) -> None:
    invoice_id = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES, Status=0)
    (created,) = await sales.settled()
    assert not sales.target.invoices, "a draft is not mirrored"
    assert created.status == "ignored"
    assert "draft" in created.outcomes["sales"]["detail"]
    assert created.reason.startswith("sales: ") and "draft" in created.reason, "the reason is on the event"

    done(await sales.act("invoice", "sendbyemail", Identifier=invoice_id), "invoice_is_sent")
    mirror = assert_sales_mirror(sales, invoice_id)
    assert not mirror["InvoiceCode"].startswith("[concept")

    writes_before = sales.target.count_calls(writes_only=True)
    events = await sales.act("invoice", "sendreminderbyemail", Identifier=invoice_id)
    events = await sales.act("invoice", "sendsummationbyemail", Identifier=invoice_id)
    done(events, "invoice_reminder_is_sent")
    sent = done(events, "invoice_summation_is_sent")
    assert (sent.payload["Reminders"], sent.payload["Summations"]) == (1, 1)
    assert sales.target.count_calls(writes_only=True) == writes_before, (
        "a reminder changes nothing in the mirror"
    )


async def test_partly_paid_books_the_difference_the_seed_way(sales: Stack, company_x: dict[str, Any]) -> None:
    invoice_id = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)

    events = await sales.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="5.25")

    done(events, "invoice_is_partly_paid")
    mirror = assert_sales_mirror(sales, invoice_id)
    assert (mirror["Status"], str(mirror["AmountPaid"])) == (3, "5.25")


async def test_partly_paid_on_the_wefact_seed_invoice(sales: Stack, company_x: dict[str, Any]) -> None:
    invoice_id = await new_invoice(sales, company_x, WEFACT_SEED_LINES)
    await sales.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="25")
    mirror = assert_sales_mirror(sales, invoice_id)
    assert (str(mirror["AmountIncl"]), str(mirror["AmountPaid"])) == ("277.86", "25.00")


async def test_a_payment_on_an_existing_mirror_costs_three_calls(
    sales: Stack, company_x: dict[str, Any]
) -> None:
    invoice_id = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)
    source_before, target_before = len(sales.hostfact.calls), len(sales.target.calls)

    await sales.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="5.25")

    # The test's own partpayment call on the source is not factsync's.
    source_calls = len(sales.hostfact.calls) - source_before - 1
    target_calls = len(sales.target.calls) - target_before
    assert (source_calls, target_calls) == (1, 2), "read source, read target, write"


async def test_paid_by_payments_and_by_markaspaid(sales: Stack, company_x: dict[str, Any]) -> None:
    by_payment = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)
    await sales.act("invoice", "partpayment", Identifier=by_payment, AmountPaid="5.25")
    done(
        await sales.act("invoice", "partpayment", Identifier=by_payment, AmountPaid="194.40"),
        "invoice_is_paid",
    )
    assert assert_sales_mirror(sales, by_payment)["Status"] == 4

    marked = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)
    await sales.act("invoice", "partpayment", Identifier=marked, AmountPaid="5.25")
    done(await sales.act("invoice", "markaspaid", Identifier=marked), "invoice_is_paid")
    mirror = assert_sales_mirror(sales, marked)
    # HostFact's markaspaid leaves AmountPaid as it was: the mirror must too.
    assert (mirror["Status"], str(mirror["AmountPaid"])) == (4, "5.25")


async def test_unpaid_reopens_the_mirror(sales: Stack, company_x: dict[str, Any]) -> None:
    invoice_id = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)
    await sales.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="199.65")
    assert assert_sales_mirror(sales, invoice_id)["Status"] == 4

    done(await sales.act("invoice", "markasunpaid", Identifier=invoice_id), "invoice_is_unpaid")
    mirror = assert_sales_mirror(sales, invoice_id)
    assert mirror["Status"] == 2


async def test_an_overpayment_is_mirrored_as_it_is(sales: Stack, company_x: dict[str, Any]) -> None:
    invoice_id = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)
    events = await sales.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="250")
    assert done(events, "invoice_is_partly_paid").payload["AmountOpen"] == "-50.35"
    mirror = assert_sales_mirror(sales, invoice_id)
    assert (mirror["Status"], str(mirror["AmountPaid"])) == (3, "250.00")


async def test_a_payment_before_the_mirror_exists_creates_it_first(
    sales: Stack, company_x: dict[str, Any]
) -> None:
    sales.hostfact.add_debtor(**company_x)
    # Made without hooks (as before factsync was installed): the payment's hook is the first one.
    invoice = sales.hostfact.add_invoice(DebtorCode="DB0001", InvoiceLines=HOSTFACT_SEED_LINES, Status=2)
    await sales.act("invoice", "partpayment", Identifier=invoice["Identifier"], AmountPaid="5.25")
    assert str(assert_sales_mirror(sales, invoice["Identifier"])["AmountPaid"]) == "5.25"


async def test_credited_credits_the_mirror_once_and_maps_the_credit_invoice(
    sales: Stack, company_x: dict[str, Any]
) -> None:
    invoice_id = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)
    await sales.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="5.25")

    answer = await sales.call("invoice", "credit", Identifier=invoice_id)
    events = await sales.settled()

    credited = done(events, "invoice_is_credited")
    assert credited.payload["CreditInvoiceID"] == int(answer["invoice"]["Identifier"])
    mirror = assert_sales_mirror(sales, invoice_id)
    assert (mirror["Status"], mirror["AmountPaid"]) == (9, 0)
    credits = [r for r in sales.target.invoices.values() if r["Status"] == 8]
    assert len(credits) == 1
    assert str(credits[0]["AmountIncl"]) == "-199.65"
    assert credits[0]["ReferenceNumber"] == mirror["ReferenceNumber"]
    assert "mirrored as" in credited.outcomes["sales"]["detail"]

    # Every later event for the original (a replay, say) finds it credited: crediting twice is impossible.
    previous, _ = await sales.store.requeue(credited.id, by="test")
    assert previous == "done"
    await sales.settled()
    assert len([r for r in sales.target.invoices.values() if r["Status"] == 8]) == 1
    assert sales.target.count_calls("invoice", "credit") == 1


async def test_a_credit_whose_answer_was_lost_is_not_made_twice(
    sales: Stack, company_x: dict[str, Any]
) -> None:
    invoice_id = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)
    sales.target.faults.inject("lost_answer", controller="invoice", action="credit", times=1)

    await sales.call("invoice", "credit", Identifier=invoice_id)
    credited = done(await sales.settled(), "invoice_is_credited")

    assert sales.target.count_calls("invoice", "credit") == 1
    assert len([r for r in sales.target.invoices.values() if r["Status"] == 8]) == 1
    assert "mirrored as" in credited.outcomes["sales"]["detail"]


async def test_a_payment_whose_answer_was_lost_is_booked_once(
    sales: Stack, company_x: dict[str, Any]
) -> None:
    invoice_id = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)
    sales.target.faults.inject("lost_answer", controller="invoice", action="partpayment", times=1)

    done(
        await sales.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="5.25"),
        "invoice_is_partly_paid",
    )

    assert str(assert_sales_mirror(sales, invoice_id)["AmountPaid"]) == "5.25"
    applied = [c for c in sales.target.calls if c.action == "partpayment" and c.applied]
    assert len(applied) == 1, "the retry must see the lost payment and not book it again"


async def test_the_id_map_is_rebuilt_from_the_marker(
    sales: Stack, company_x: dict[str, Any], redis: Redis
) -> None:
    invoice_id = await new_invoice(sales, company_x, HOSTFACT_SEED_LINES)
    for key in await redis.keys("factsync:map:*"):
        await redis.delete(key)

    await sales.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="5.25")

    assert len(sales.target.invoices) == 1, "the mirror is found by its marker, not made again"
    assert str(assert_sales_mirror(sales, invoice_id)["AmountPaid"]) == "5.25"


# --- purchase route ------------------------------------------------------------------------------------


async def test_purchase_created_and_edited(purchase: Stack, company_x: dict[str, Any]) -> None:
    invoice_id = await new_invoice(purchase, company_x, PURCHASE_SEED_LINES, InvoiceCode="2018-6422", Term=30)
    source = purchase.hostfact.invoice(invoice_id)
    mirror = purchase_mirror(purchase, source)
    assert (mirror["InvoiceCode"], mirror["CreditorCode"], mirror["Status"]) == ("2018-6422", "CD0001", 1)
    assert (str(mirror["AmountExcl"]), str(mirror["AmountIncl"])) == ("162.50", "196.63")
    if purchase.target.store.dialect == "hostfact":
        assert lines_of(mirror) == lines_of(source)
    else:
        # WeFact's purchase lines have no quantity: the line's total, its number in the description.
        assert lines_of(mirror) == [
            ("3 × Domains .com", Decimal(1), Decimal("37.50"), Decimal(21)),
            ("SLA contract #2", Decimal(1), Decimal(125), Decimal(21)),
        ]
    assert mirror["Date"] == source["Date"]

    done(await purchase.act("invoice", "edit", Identifier=invoice_id, Term=14), "invoice_is_edited")
    assert purchase_mirror(purchase, source)["Term"] == 14  # the seed's creditinvoice edit


async def test_purchase_payments(purchase: Stack, company_x: dict[str, Any]) -> None:
    invoice_id = await new_invoice(purchase, company_x, PURCHASE_SEED_LINES, InvoiceCode="2018-6422")
    source = purchase.hostfact.invoice(invoice_id)

    done(
        await purchase.act("invoice", "partpayment", Identifier=invoice_id, AmountPaid="50"),
        "invoice_is_partly_paid",
    )
    mirror = purchase_mirror(purchase, source)
    assert (mirror["Status"], str(mirror["AmountPaid"])) == (2, "50.00")

    done(await purchase.act("invoice", "markaspaid", Identifier=invoice_id), "invoice_is_paid")
    assert purchase_mirror(purchase, source)["Status"] == 3


async def test_purchase_credited(purchase: Stack, company_x: dict[str, Any]) -> None:
    invoice_id = await new_invoice(purchase, company_x, PURCHASE_SEED_LINES, InvoiceCode="2018-6422")
    source = purchase.hostfact.invoice(invoice_id)

    answer = await purchase.call("invoice", "credit", Identifier=invoice_id)
    done(await purchase.settled(), "invoice_is_credited")

    credits = [r for r in purchase.target.creditinvoices.values() if r["Status"] == 8]
    assert len(credits) == 1
    (credit,) = credits
    assert credit["InvoiceCode"] == answer["invoice"]["InvoiceCode"], "the supplier's number of the credit"
    assert str(credit["AmountIncl"]) == "-196.63"
    # WeFact's purchase lines have no quantity: 3 × 12.50 is one line of 37.50.
    per_unit = purchase.target.store.dialect == "hostfact"
    assert sorted(Decimal(line["PriceExcl"]) for line in credit["InvoiceLines"]) == [
        Decimal("-125"),
        Decimal("-12.5") if per_unit else Decimal("-37.5"),
    ]
    if purchase.target.store.dialect == "hostfact":
        assert purchase_mirror(purchase, source)["Status"] == 9


async def test_purchase_ignores_unmapped_debtors(purchase: Stack) -> None:
    purchase.hostfact.add_debtor(CompanyName="Someone else")  # DB0001: mapped
    purchase.hostfact.add_debtor(CompanyName="Not a group company")  # DB0002: not mapped
    await purchase.call("invoice", "add", DebtorCode="DB0002", InvoiceLines=PURCHASE_SEED_LINES, Status=2)
    (event,) = await purchase.settled()
    assert event.status == "ignored"
    assert "DB0002" in event.outcomes["purchase"]["detail"]
    assert not purchase.target.creditinvoices


def test_simulator_type_is_what_the_helpers_expect() -> None:
    assert hasattr(SimAdministration, "count_calls")


async def test_a_dry_run_route_reads_both_ledgers_and_writes_nothing(redis: Redis, redis_url: str) -> None:
    async with running_stack(redis_url, route_options={"dry_run": True}) as stack:
        stack.hostfact.add_debtor(CompanyName="Company X")
        answer = await stack.call(
            "invoice", "add", DebtorCode="DB0001", InvoiceLines=HOSTFACT_SEED_LINES, Status=2
        )
        events = await stack.act(
            "invoice", "partpayment", Identifier=answer["invoice"]["Identifier"], AmountPaid="5"
        )

        assert stack.target.count_calls(writes_only=True) == 0
        assert not stack.target.invoices
        paid = done(events, "invoice_is_partly_paid")
        assert paid.outcomes["sales"]["planned"] == ["CreateMirror()", "Pay(amount=5.00)"]
        assert "dry run" in paid.outcomes["sales"]["detail"]


async def test_the_targets_credit_numbering_does_not_take_the_sources_next_number(
    sales: Stack, company_x: dict[str, Any]
) -> None:
    """The target numbers the credit invoice it makes from its own sequence (F0002 here), which the
    source's next invoice needs; factsync gives it the source credit's number, and the next mirror waits."""
    sales.hostfact.add_debtor(**company_x)
    first = await sales.call(
        "invoice", "add", DebtorCode="DB0001", InvoiceLines=HOSTFACT_SEED_LINES, Status=2
    )
    await sales.settled()
    await sales.call(
        "invoice", "credit", Identifier=first["invoice"]["Identifier"]
    )  # source: F0002 is the credit
    await sales.settled()
    # The next invoices in the source, F0003 and F0004 (F0002 is its credit invoice).
    for _ in range(2):
        await sales.call("invoice", "add", DebtorCode="DB0001", InvoiceLines=HOSTFACT_SEED_LINES, Status=2)
    events = await sales.settled()

    assert [e.reason for e in events if e.status == "failed"] == []
    in_source = sorted((r["InvoiceCode"], r["Status"]) for r in sales.hostfact.invoices.values())
    in_target = sorted(
        (r["InvoiceCode"], SALES_STATUS_IN_TARGET.get(r["Status"], r["Status"]))
        for r in sales.target.invoices.values()
    )
    assert in_target == [(code, SALES_STATUS_IN_TARGET.get(status, status)) for code, status in in_source]
