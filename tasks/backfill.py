"""Which source invoices a route mirrors, listed in bulk, and what a backfill must do for each of them.

`factsync backfill` and `audit` go over these. A backfill lists the target once (the documents carrying the
route's markers) and pairs its rows with the id map: a mirror whose list row agrees with the source's costs
nothing, an absent one is made without searching for it first, the rest get an ordinary sync.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tasks import credits
from tasks.adapters import DEBTOR_ABSENT, LIST_CONCURRENCY, ledger_for, listed_sales, parse_sales_invoice
from tasks.client import ApiClient, Row, Rows
from tasks.drift import compare
from tasks.errors import PermanentError
from tasks.invoice import Invoice, Status, marker
from tasks.ledger import IdMap, Ledger
from tasks.model import Route
from tasks.sync import CREATING, not_mirrored

# Markers read whole at once for documents the id map does not name (each read waits for the budget).
READ_CONCURRENCY = 8


class Progress(Protocol):
    """Told how far a bulk run is: ``done`` of ``total``, and the seconds the budget needs for the rest."""

    def __call__(self, done: int, total: int, eta: float | None = None) -> None: ...


def budget_eta(calls_left: Iterable[tuple[int, int]]) -> float:
    """Seconds that (calls per minute, calls left) pairs take, one per administration: they run side by side,
    so the slowest tells."""
    return max((60.0 * calls / per_minute for per_minute, calls in calls_left if calls > 0), default=0.0)


def marker_prefix(source: str) -> str:
    """What every marker of ``source`` starts with: a list search for it finds all its mirrors."""
    return marker(source, "")[:-1]


async def source_invoices(source: ApiClient, *, since: datetime | None = None) -> list[Row]:
    """Every invoice of the source (paged), or those modified since ``since``; oldest first.

    ``since`` is sent as HostFact's ``modified[from]`` filter, in the administration's wall-clock time.
    """
    filters: dict[str, Any] = {"modified": {"from": since.strftime("%Y-%m-%d %H:%M:%S")}} if since else {}
    rows = await source.list("invoice", concurrency=LIST_CONCURRENCY, **filters)
    # Oldest first, so mirrors are made in the order the source made the invoices.
    return sorted(rows, key=lambda row: int(row["Identifier"]))


def to_mirror(route: Route, rows: list[Row]) -> tuple[list[Invoice], dict[str, int]]:
    """The listed invoices ``route`` mirrors, and how many it skips per reason.

    List rows carry no lines; status, number and debtor are all this needs.
    """
    wanted: list[Invoice] = []
    skipped: dict[str, int] = {}
    for row in rows:
        invoice = parse_sales_invoice(row)
        reason = not_mirrored(route, invoice)
        if reason is None:
            wanted.append(invoice)
        else:
            skipped[reason] = skipped.get(reason, 0) + 1
    return wanted, skipped


@dataclass
class BackfillPlan:
    """What a backfill does per invoice, decided from one listing of each side and the id map."""

    listed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    # When the listings began (epoch seconds): a hint that a mirror is absent says it was absent then.
    listed_at: float = 0.0
    # Mirrors whose list row agrees with the source's: nothing to do.
    in_step: int = 0
    # No mirror in the target's listing, none in the id map, none being made: make it, without a search.
    create: list[Invoice] = field(default_factory=list)
    # A mirror that differs, or one the listing cannot vouch for: an ordinary sync.
    sync: list[Invoice] = field(default_factory=list)
    # Documents carrying a marker the id map did not name, read to learn it.
    read_markers: int = 0
    # Debtors of mirrors to make that the target lacks: the first sync of each makes it.
    new_parties: set[str] = field(default_factory=set)


async def plan_backfill(
    route: Route, *, source: ApiClient, target: ApiClient, ids: IdMap, since: datetime | None = None
) -> BackfillPlan:
    """List the source's invoices and the target's marked documents, and decide per invoice.

    Writes to the id map what a sync would (the mirror a marked document the map did not name is, a debtor
    that already exists in a sales target) and that a debtor was not found (`adapters.DEBTOR_ABSENT`).
    """
    plan = BackfillPlan(listed_at=time.time())
    ledger = ledger_for(route, target, ids, [])
    rows, marked = await asyncio.gather(
        source_invoices(source, since=since), ledger.listing(marker_prefix(route.source))
    )
    wanted, plan.skipped = to_mirror(route, rows)
    plan.listed = len(rows)
    wanted_ids = [invoice.id for invoice in wanted]
    # Read after the target was listed: a mirror made since is in the id map, or being made (CREATING).
    mirrors = await ids.get_many("invoice", wanted_ids)
    creating = await ids.get_many(CREATING, wanted_ids)
    notes = await ids.members_many(credits.PARTIAL_CREDITS, wanted_ids)
    target_rows = {str(row["Identifier"]): row for row in marked}
    named = set(mirrors.values())
    unnamed = [
        ident
        for ident, row in target_rows.items()
        if ident not in named and ledger.listed(row).invoice.status is not Status.CREDIT
    ]
    if since is None:
        # Every mirror is in the listing: learn the markers of those the id map does not name (a lost or
        # partly rebuilt map), so that what is left unnamed is certainly absent.
        plan.read_markers = len(unnamed)
        certain = await _learn_markers(
            route, ledger, ids, [target_rows[ident] for ident in unnamed], set(wanted_ids), mirrors
        )
    else:
        # The source was listed in part: unnamed mirrors are expected (of invoices not listed), so none of
        # the listed invoices is known to be absent; their syncs search as ever.
        certain = not unnamed
    source_rows = {str(row["Identifier"]): row for row in rows}
    for invoice in wanted:
        mirror_id = mirrors.get(invoice.id)
        if mirror_id is None:
            (plan.create if certain and invoice.id not in creating else plan.sync).append(invoice)
            continue
        mirror_row = target_rows.get(mirror_id)
        if mirror_row is None or notes.get(invoice.id):
            plan.sync.append(invoice)
            continue
        have, held = listed_sales(source_rows[invoice.id]), ledger.listed(mirror_row)
        differences = compare(
            ledger.represent(have.invoice),
            held.invoice,
            paid_keeps_amount=ledger.paid_keeps_amount,
            fields=have.fields & held.fields,
        )
        if differences:
            plan.sync.append(invoice)
        else:
            plan.in_step += 1
    if route.ledger == "sales" and plan.create:
        plan.new_parties = await _known_debtors(target, ids, {invoice.party for invoice in plan.create})
    return plan


async def _learn_markers(
    route: Route,
    ledger: Ledger,
    ids: IdMap,
    unnamed: Rows,
    wanted: set[str],
    mirrors: dict[str, str],
) -> bool:
    """Read each marked document the id map does not name (list rows of HostFact carry no marker) and map
    it, as `factsync remap` would; False when one could not be read (gone meanwhile, or refused): then no
    invoice is taken for certain to have no mirror."""
    pattern = re.compile(re.escape(marker_prefix(route.source)) + r"(\d+)\]")
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def learn(row: Row) -> bool:
        document_id = str(row["Identifier"])
        # WeFact's purchase rows carry the marker (Comment); the others are read for it.
        reference = ledger.listed(row).invoice.reference
        if not reference:
            try:
                async with gate:
                    reference = (await ledger.read(document_id)).reference
            except PermanentError:
                return False
        match = pattern.fullmatch(reference)
        if match and match.group(1) in wanted and match.group(1) not in mirrors:
            mirrors[match.group(1)] = document_id
            await ids.put("invoice", match.group(1), document_id)
        return True

    return all(await asyncio.gather(*(learn(row) for row in unnamed)))


async def _known_debtors(target: ApiClient, ids: IdMap, parties: set[str]) -> set[str]:
    """Remember the debtors of ``parties`` the target already has, as a sync does after its `debtor list`
    search, and those it lacks as such, so the syncs that make mirrors for them search no more (one paged
    listing instead); return those it lacks."""
    known = await ids.get_many("debtor", sorted(parties))
    if len(known) == len(parties):
        return set()
    rows = await target.list("debtor", concurrency=LIST_CONCURRENCY)
    present = {str(row.get("DebtorCode", "")) for row in rows}
    lacking: set[str] = set()
    for party in sorted(parties - set(known)):
        if party in present:
            await ids.put("debtor", party, party)
        else:
            lacking.add(party)
            await ids.put(DEBTOR_ABSENT, party, str(round(time.time())))
    return lacking


def estimated_calls(invoice: Invoice, *, create: bool) -> tuple[int, int]:
    """(source, target) calls the sync of ``invoice`` will likely make: for the progress bar's ETA."""
    steps = {Status.PARTLY_PAID: 1, Status.PAID: 1, Status.CANCELLED: 2}.get(invoice.status, 0)
    if create:
        return 1 + (1 if invoice.status is Status.CANCELLED else 0), 1 + steps
    return 1, 2 + steps
