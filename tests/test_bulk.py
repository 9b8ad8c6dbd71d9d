"""Audit and backfill by list pages (issue 12), on the simulator, both routes into both target dialects.

A header audit must find what a deep one finds wherever the list rows show the difference; a backfill must
make a missing mirror with one add and the payment steps its state needs, leave an in-step target alone,
resume after Ctrl-C without doubling anything, and leave the hooks' syncs moving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from tasks.drift import Difference
from tasks.invoice import marker
from tasks.sync import ABSENT, CREATING
from tests.stack import LINES, Stack, running_stack
from worker import resync
from worker.idmap import RedisIdMap

Record = dict[str, Any]

COMBINATIONS = [("sales", "wefact"), ("sales", "hostfact"), ("purchase", "wefact"), ("purchase", "hostfact")]


@pytest.fixture(params=COMBINATIONS, ids=[f"{ledger}-{dialect}" for ledger, dialect in COMBINATIONS])
async def bulk(request: pytest.FixtureRequest, redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    ledger, dialect = request.param
    creditors = {"DB0001": "CD0001"} if ledger == "purchase" else None
    async with running_stack(redis_url, target_dialect=dialect, ledger=ledger, creditors=creditors) as stack:
        if ledger == "purchase":
            stack.target.add_creditor(CompanyName="Our supplier B.V.")
        yield stack


def seed(
    stack: Stack, *, open_: int = 3, part: int = 2, paid: int = 2, marked: int = 1
) -> dict[str, list[int]]:
    """Invoices factsync never heard of (no hooks): open, part-paid, paid by payments, marked as paid."""
    if not stack.hostfact.debtors:
        stack.hostfact.add_debtor(CompanyName="Company X")
    made: dict[str, list[int]] = {"open": [], "part": [], "paid": [], "marked": []}
    for kind, count in (("open", open_), ("part", part), ("paid", paid), ("marked", marked)):
        for _ in range(count):
            invoice = stack.hostfact.add_invoice(DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
            ident = invoice["Identifier"]
            if kind == "part":
                stack.hostfact.execute("invoice", "partpayment", {"Identifier": ident, "AmountPaid": "50"})
            elif kind == "paid":
                amount = str(invoice["AmountIncl"])
                stack.hostfact.execute("invoice", "partpayment", {"Identifier": ident, "AmountPaid": amount})
            elif kind == "marked":
                stack.hostfact.execute("invoice", "markaspaid", {"Identifier": ident})
            made[kind].append(ident)
    return made


def documents(stack: Stack) -> dict[int, Record]:
    purchase = stack.settings.route(_route_name(stack)).ledger == "purchase"
    return stack.target.creditinvoices if purchase else stack.target.invoices


def mirrors(stack: Stack, source_id: int) -> list[Record]:
    mark = marker("hostfact", str(source_id))
    return [
        doc
        for doc in documents(stack).values()
        if doc.get("ReferenceNumber", doc.get("Comment")) == mark and doc["Status"] != 8
    ]


def mirror(stack: Stack, source_id: int) -> Record:
    (found,) = mirrors(stack, source_id)
    return found


def _route_name(stack: Stack) -> str:
    (name,) = stack.settings.routes
    return name


def controller(stack: Stack) -> str:
    return "creditinvoice" if _route_name(stack) == "purchase" else "invoice"


def drift_by_source(report: Any) -> dict[str, tuple[Difference, ...]]:
    return {drift.source_id: drift.differences for drift in report.drifts}


async def test_a_header_audit_finds_what_a_deep_audit_finds(bulk: Stack, redis: Redis) -> None:
    stack, route = bulk, bulk.settings.route(_route_name(bulk))
    made = seed(stack)
    total = sum(len(ids) for ids in made.values())
    await resync.backfill(stack.settings, redis, route)
    shows = stack.hostfact.count_calls("invoice", "show")
    clean = await resync.audit(stack.settings, redis, route)
    assert (clean.drifts, clean.by_header, clean.by_lines) == ([], total, 0)
    assert stack.hostfact.count_calls("invoice", "show") == shows, "an audit in step reads no invoice whole"

    # Drift the list rows show: a paid amount, a date, a number, a mirror deleted by hand.
    mirror(stack, made["part"][0])["AmountPaid"] += Decimal("1.00")
    mirror(stack, made["open"][0])["Date"] = "2020-01-01"
    mirror(stack, made["open"][1])["InvoiceCode"] = "X-0001"
    del documents(stack)[mirror(stack, made["open"][2])["Identifier"]]
    # Drift they cannot show: a line edited in place, the totals unchanged.
    relined = mirror(stack, made["paid"][0])
    relined["InvoiceLines"][0]["Description"] += " (edited by hand)"

    shows = stack.hostfact.count_calls("invoice", "show")
    header = await resync.audit(stack.settings, redis, route)
    read_whole = stack.hostfact.count_calls("invoice", "show") - shows
    deep = await resync.audit(stack.settings, redis, route, deep=True)

    visible = {str(made["part"][0]), str(made["open"][0]), str(made["open"][1]), str(made["open"][2])}
    found_deep = drift_by_source(deep)
    assert set(found_deep) == visible | {str(made["paid"][0])}
    assert [d.field for d in found_deep[str(made["paid"][0])]] == ["lines"], "--deep finds the lines"
    assert drift_by_source(header) == {k: v for k, v in found_deep.items() if k in visible}
    assert [d.field for d in found_deep[str(made["part"][0])]] == ["paid"]
    assert (header.by_header, header.by_lines, read_whole) == (total - 4, 4, 4)
    assert (deep.by_header, deep.by_lines) == (0, total)


async def test_backfill_makes_a_mirror_with_an_add_and_its_payments_and_leaves_one_in_step(
    bulk: Stack, redis: Redis
) -> None:
    stack, route = bulk, bulk.settings.route(_route_name(bulk))
    made = seed(stack)
    total = sum(len(ids) for ids in made.values())
    name = controller(stack)

    run = await resync.backfill(stack.settings, redis, route)

    assert (run.created, run.in_step, run.outcomes) == (total, 0, {"done": total})
    for kind, ids in made.items():
        for ident in ids:
            source, held = stack.hostfact.invoice(ident), mirror(stack, ident)
            assert held["AmountIncl"] == source["AmountIncl"], kind
            if name == "invoice":
                assert (held["Status"], held["AmountPaid"]) == (source["Status"], source["AmountPaid"]), kind
    # The target: one add per mirror and one payment step per paid state, nothing read, no search per invoice.
    payments = len(made["part"]) + len(made["paid"]) + len(made["marked"])
    # HostFact's creditinvoice add ignores Term: its mirrors get it by an edit right after (tasks.sync).
    term_edits = total if (name, stack.target.store.dialect) == ("creditinvoice", "hostfact") else 0
    debtor_writes = stack.target.count_calls("debtor", "add")
    assert stack.target.count_calls(name, "add") == total
    assert stack.target.count_calls(name, writes_only=True) == total + payments + term_edits
    assert stack.target.count_calls(writes_only=True) == total + payments + term_edits + debtor_writes
    assert stack.target.count_calls(action="show") == 0
    # The marked documents' listing, and (sales) the debtors' listing: no search for the new debtor either.
    assert stack.target.count_calls(action="list") == (2 if name == "invoice" else 1)
    assert debtor_writes == (1 if name == "invoice" else 0)

    lists, writes = stack.target.count_calls(action="list"), stack.target.count_calls(writes_only=True)
    again = await resync.backfill(stack.settings, redis, route)
    assert (again.in_step, again.planned, again.event_ids) == (total, 0, [])
    assert stack.target.count_calls(writes_only=True) == writes, "an in-step target gets no write"
    assert stack.target.count_calls(action="list") == lists + 1, "one listing, nothing read per invoice"

    # The id map lost (a Redis restored without it): each marked document is read once for its marker
    # (WeFact's purchase rows carry it), and nothing is made twice.
    id_map = RedisIdMap(redis, route.name)
    for ident in [i for kind in made.values() for i in kind]:
        await id_map.forget("invoice", str(ident))
    shows = stack.target.count_calls(action="show")
    lost = await resync.backfill(stack.settings, redis, route)
    assert (lost.in_step, lost.planned) == (total, 0)
    reads = 0 if (name, stack.target.store.dialect) == ("creditinvoice", "wefact") else total
    assert stack.target.count_calls(action="show") - shows == reads
    assert stack.target.count_calls(writes_only=True) == writes


async def test_an_interrupted_backfill_resumes_without_doubling(bulk: Stack, redis: Redis) -> None:
    stack, route = bulk, bulk.settings.route(_route_name(bulk))
    made = seed(stack, open_=4, part=3, paid=3, marked=2)
    everything = [ident for ids in made.values() for ident in ids]
    asked = 0

    def stop_after_three() -> bool:  # Ctrl-C while the fourth sync was about to be scheduled
        nonlocal asked
        asked += 1
        return asked > 3

    first = await resync.backfill(stack.settings, redis, route, stopped=stop_after_three)
    assert first.interrupted and len(first.event_ids) == 3 and first.planned == len(everything)
    # Run again at once: the first run's syncs may still be making their mirrors while this one lists.
    second = await resync.backfill(stack.settings, redis, route)
    await stack.settled()

    assert not second.interrupted and second.outcomes.get("failed") is None
    for ident in everything:
        assert len(mirrors(stack, ident)) == 1, f"invoice {ident} mirrored {len(mirrors(stack, ident))} times"
    for ident in made["part"] + made["paid"]:
        paid = stack.hostfact.invoice(ident)["AmountPaid"]
        if controller(stack) == "invoice" or ident in made["part"]:
            assert mirror(stack, ident)["AmountPaid"] == paid, "a payment booked twice, or not at all"
    assert stack.target.count_calls(controller(stack), "add") == len(everything)
    third = await resync.backfill(stack.settings, redis, route)
    assert (third.in_step, third.planned) == (len(everything), 0)


async def test_live_hooks_keep_moving_during_a_bulk_run(redis: Redis, redis_url: str) -> None:
    # 600 calls a minute: a backfill of 40 invoices keeps the budget busy for several seconds.
    async with running_stack(redis_url, budget=600) as stack:
        route = stack.settings.route("sales")
        seed(stack, open_=40, part=0, paid=0, marked=0)
        backfill = asyncio.create_task(resync.backfill(stack.settings, redis, route))
        await asyncio.sleep(1.0)

        started = time.monotonic()
        answer = await stack.call("invoice", "add", DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
        ident = int(answer["invoice"]["Identifier"])
        while not mirrors(stack, ident):
            assert time.monotonic() - started < 5, "the hook's sync waited behind the backfill"
            await asyncio.sleep(0.02)
        took = time.monotonic() - started
        left = 40 - sum(1 for i in range(1, 41) if mirrors(stack, i))
        assert not backfill.done() and left > 5, "the bulk run was still going when the hook's sync ended"
        run = await backfill
        assert run.outcomes == {"done": 40}
        print(f"hook mirrored in {took:.2f} s with {left} backfill mirrors still to make")


async def test_a_listing_hint_gives_way_to_a_mirror_being_made(redis: Redis, redis_url: str) -> None:
    """A sync that added a mirror and died before the id map held it leaves CREATING: a backfill's hint that
    the mirror is absent (from a listing taken just before that add) must not make the next sync add it
    again."""
    async with running_stack(redis_url) as stack:
        route = stack.settings.route("sales")
        (ident,) = seed(stack, open_=1, part=0, paid=0, marked=0)["open"]
        await resync.backfill(stack.settings, redis, route)
        ids = RedisIdMap(redis, route.name)
        await ids.forget("invoice", str(ident))
        await ids.put(CREATING, str(ident), str(time.time()))
        await ids.put(ABSENT, str(ident), str(time.time()))

        code = stack.hostfact.invoice(ident)["InvoiceCode"]
        run = await resync.schedule_syncs(
            stack.settings, redis, route, [resync.ToSync(str(ident), code)], action="backfill"
        )

        assert run.outcomes == {"done": 1}
        assert len(mirrors(stack, ident)) == 1, "the hint was trusted while a mirror was being made"
        assert await ids.get("invoice", str(ident)) == str(mirror(stack, ident)["Identifier"])
        assert await ids.get(CREATING, str(ident)) is None and await ids.get(ABSENT, str(ident)) is None


async def test_a_stopped_deep_audit_resumes_where_it_stopped(redis: Redis, redis_url: str) -> None:
    async with running_stack(redis_url) as stack:
        route = stack.settings.route("sales")
        made = seed(stack)
        total = sum(len(ids) for ids in made.values())
        await resync.backfill(stack.settings, redis, route)
        mirror(stack, made["part"][0])["AmountPaid"] += Decimal("1.00")
        mirror(stack, made["paid"][0])["InvoiceLines"][0]["Description"] += " (edited by hand)"
        asked = 0

        def stop_after_four() -> bool:
            nonlocal asked
            asked += 1
            return asked > 4

        shows = stack.hostfact.count_calls("invoice", "show")
        stopped = await resync.audit(stack.settings, redis, route, deep=True, stopped=stop_after_four)
        assert stopped.interrupted and stopped.by_lines == 4
        # Meanwhile one of the four read (the oldest four, in order) is paid in the source: read it again.
        changed = made["open"][0]
        stack.hostfact.execute("invoice", "partpayment", {"Identifier": changed, "AmountPaid": "1"})
        stack.hostfact.invoice(changed)["Modified"] = "2099-01-01 00:00:00"

        resumed = await resync.audit(stack.settings, redis, route, deep=True, resume=True)
        read = stack.hostfact.count_calls("invoice", "show") - shows
        full = await resync.audit(stack.settings, redis, route, deep=True)

        assert not resumed.interrupted and (resumed.by_lines, resumed.resumed) == (total, 3)
        assert read == 4 + (total - 3), "each invoice read once, the changed one twice"
        assert drift_by_source(resumed) == drift_by_source(full)
        assert set(drift_by_source(full)) == {str(made["part"][0]), str(made["paid"][0]), str(changed)}
        assert not await redis.exists("factsync:audit:sales:checked"), "an audit that ended keeps nothing"
