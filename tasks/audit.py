"""Compare a route's target with its source: status, number, amounts, paid amount, date, lines, credit notes.

`audit_route` reads both administrations (read only). It lists both sides by pages and compares what the list
rows show (a header audit); it reads an invoice whole (`show`, as `--deep` does for every one) only where the
headers disagree, where the id map names no mirror the listing holds, or when asked to go deep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from tasks import credits
from tasks.adapters import ledger_for, listed_sales, parse_sales_invoice
from tasks.backfill import Progress, budget_eta, marker_prefix, source_invoices, to_mirror
from tasks.client import ApiClient, Rows
from tasks.drift import Difference, compare, compare_credit_notes
from tasks.invoice import Status, marker
from tasks.ledger import IdMap, Ledger
from tasks.model import Route
from tasks.plan import next_step
from tasks.sync import not_mirrored

# Invoices read whole at once (each read still waits for the shared budget).
READ_CONCURRENCY = 8


@dataclass(frozen=True)
class Drift:
    source_id: str
    code: str
    differences: tuple[Difference, ...]
    mirror_id: str = ""
    # Whether a sync would change the mirror (the plan has a step for it); the rest needs a person.
    fixable: bool = True


@dataclass(frozen=True)
class Checked:
    """An invoice read whole by an audit: the list rows' Modified of it and its mirror then, and its drift.
    An audit stopped half way keeps these, so the next one (resumed) need not read it again while neither
    row has changed."""

    stamp: str
    drift: Drift | None


@dataclass
class AuditReport:
    route: str
    listed: int = 0
    compared: int = 0
    # How they were compared: by what the list rows show, or read whole (`show`, lines and all).
    by_header: int = 0
    by_lines: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    drifts: list[Drift] = field(default_factory=list)
    # Stopped before every invoice was compared (Ctrl-C): the drift is what was found until then.
    interrupted: bool = False
    # Of those read whole: taken from the stopped audit this one resumed (unchanged since).
    resumed: int = 0


async def audit_route(
    route: Route,
    *,
    source: ApiClient,
    target: ApiClient,
    ids: IdMap,
    since: datetime | None = None,
    deep: bool = False,
    progress: Progress | None = None,
    stopped: Callable[[], bool] | None = None,
    earlier: Mapping[str, Checked] | None = None,
    checked: Callable[[str, Checked], Awaitable[None]] | None = None,
) -> AuditReport:
    """Compare every invoice ``route`` mirrors (or those modified since ``since``) with its mirror.

    Read only: the id map is consulted, never written. ``deep``: read every invoice whole on both sides (two
    reads an invoice), else only those the list rows cannot vouch for. ``stopped`` is asked before each
    whole read; once it says so, the report is what was compared until then. ``checked`` is told of each
    invoice read whole; ``earlier``, what a stopped audit was told: an invoice whose rows are as they were
    then is not read again.
    """
    ledger = ledger_for(route, target, ids, [])
    marked: Rows = []
    if deep and not (earlier or checked):
        rows = await source_invoices(source, since=since)
    else:
        rows, marked = await asyncio.gather(
            source_invoices(source, since=since), ledger.listing(marker_prefix(route.source))
        )
    wanted, skipped = to_mirror(route, rows)
    report = AuditReport(route.name, listed=len(rows), skipped=skipped)
    audited = [invoice.id for invoice in wanted]
    # A partial credit made since ``since`` changed its original, which may not be listed itself.
    links = await ids.get_many(credits.CREDIT_OF, [str(row["Identifier"]) for row in rows])
    seen = set(audited)
    for credit_id in sorted(links, key=_numeric):
        original = links[credit_id].split()[0]
        if original not in seen:
            audited.append(original)
            seen.add(original)
    whole = audited if deep else await _by_header(route, ledger, ids, rows, marked, audited, report)
    total = len(audited)
    stamps = await _stamps(ids, rows, marked, whole) if earlier or checked else {}

    def tell() -> None:
        if progress is not None:
            left = total - report.by_header - report.by_lines
            rates = (source.admin.rate_limit_per_minute, target.admin.rate_limit_per_minute)
            progress(report.by_header + report.by_lines, total, budget_eta((rate, left) for rate in rates))

    tell()
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def read_whole(source_id: str) -> None:
        stamp = stamps.get(source_id, "")
        before = earlier.get(source_id) if earlier and stamp else None
        if before is not None and before.stamp == stamp:
            report.compared += 1
            report.by_lines += 1
            report.resumed += 1
            drift = before.drift
        else:
            async with gate:
                if stopped is not None and stopped():
                    report.interrupted = True
                    return
                drift = await _audit_one(route, source_id, source, target, ids, report)
            if checked is not None and stamp:
                await checked(source_id, Checked(stamp, drift))
        if drift is not None:
            report.drifts.append(drift)
        tell()

    await asyncio.gather(*(read_whole(source_id) for source_id in whole))
    report.drifts.sort(key=lambda drift: _numeric(drift.source_id))
    return report


async def _by_header(
    route: Route,
    ledger: Ledger,
    ids: IdMap,
    rows: Rows,
    marked: Rows,
    audited: list[str],
    report: AuditReport,
) -> list[str]:
    """Compare by list rows what they can vouch for; return the invoices to read whole.

    Read whole: an invoice whose mirror the id map does not name or the listing does not hold (missing, or a
    map to rebuild), one whose rows disagree (to tell what differs, lines and all, as a deep audit would),
    one the source listing lacks (an original of a recent credit), and one with a credit note either side
    lacks."""
    source_rows = {str(row["Identifier"]): row for row in rows}
    target_rows = {str(row["Identifier"]): row for row in marked}
    mirrors = await ids.get_many("invoice", audited)
    notes = await ids.members_many(credits.PARTIAL_CREDITS, audited)
    note_mirrors = await ids.get_many("invoice", sorted({n for held in notes.values() for n in held}))
    whole: list[str] = []
    for source_id in audited:
        row = source_rows.get(source_id)
        mirror_row = target_rows.get(mirrors.get(source_id, ""))
        if row is None or mirror_row is None:
            whole.append(source_id)
            continue
        wanted, mirror = listed_sales(row), ledger.listed(mirror_row)
        differences = compare(
            ledger.represent(wanted.invoice),
            mirror.invoice,
            paid_keeps_amount=ledger.paid_keeps_amount,
            fields=wanted.fields & mirror.fields,
        )
        for note_id in sorted(notes.get(source_id, ()), key=_numeric):
            note_row = source_rows.get(note_id)
            held_row = target_rows.get(note_mirrors.get(note_id, ""))
            if note_row is None or held_row is None:
                differences.append(Difference("credit note", note_id, "not listed"))
                break
            note, held = listed_sales(note_row), ledger.listed(held_row)
            differences += compare_credit_notes(note.invoice, held.invoice, fields=note.fields & held.fields)
        if differences:
            whole.append(source_id)
        else:
            report.by_header += 1
            report.compared += 1
    return whole


async def _stamps(ids: IdMap, rows: Rows, marked: Rows, whole: list[str]) -> dict[str, str]:
    """Per invoice to read whole, the list rows' Modified of it and of its mirror (as the id map names it):
    what says it is unchanged since an earlier audit read it. None for one with partial credits (a credit
    note's change shows in neither row)."""
    modified = {str(row["Identifier"]): str(row.get("Modified", "")) for row in rows}
    held = {str(row["Identifier"]): str(row.get("Modified", "")) for row in marked}
    mirrors = await ids.get_many("invoice", whole)
    notes = await ids.members_many(credits.PARTIAL_CREDITS, whole)
    return {
        source_id: f"{modified[source_id]}|{held.get(mirrors.get(source_id, ''), '')}"
        for source_id in whole
        if modified.get(source_id) and source_id not in notes
    }


def _numeric(identifier: str) -> tuple[int, str]:
    return (int(identifier), "") if identifier.isdigit() else (0, identifier)


async def _audit_one(
    route: Route, source_id: str, source: ApiClient, target: ApiClient, ids: IdMap, report: AuditReport
) -> Drift | None:
    wanted = parse_sales_invoice(await source.show("invoice", identifier=source_id))
    skip = not_mirrored(route, wanted)
    if skip is not None:  # it changed since the listing
        report.skipped[skip] = report.skipped.get(skip, 0) + 1
        return None
    report.compared += 1
    report.by_lines += 1
    ledger = ledger_for(route, target, ids, [], wanted.party)
    wanted = ledger.represent(wanted)
    mark = marker(route.source, wanted.id)
    mirror, credit = await ledger.locate(await ids.get("invoice", wanted.id), mark)
    credited = False
    if mirror is not None and wanted.status is Status.CANCELLED and mirror.status is not Status.CANCELLED:
        if credit is None:
            _, credit = await ledger.find(mark)
        credited = credit is not None
    differences = compare(wanted, mirror, paid_keeps_amount=ledger.paid_keeps_amount, credited=credited)
    notes = await _credit_note_drift(route, wanted.id, source, ledger, ids) if mirror is not None else []
    differences += notes
    if not differences:
        return None
    # A sync makes a missing credit note; one the target holds otherwise needs a person.
    missing_note = any(d.field == "credit note" for d in notes)
    fixable = (
        missing_note or next_step(wanted, mirror, paid_keeps_amount=ledger.paid_keeps_amount) is not None
    )
    return Drift(wanted.id, wanted.code, tuple(differences), mirror.id if mirror else "", fixable)


async def _credit_note_drift(
    route: Route, source_id: str, source: ApiClient, ledger: Ledger, ids: IdMap
) -> list[Difference]:
    """How the target's credit notes differ from the source's partial credits of this invoice."""
    found: list[Difference] = []
    for credit_id, _ in await credits.partial_credits(ids, source_id):
        wanted = ledger.represent(parse_sales_invoice(await source.show("invoice", identifier=credit_id)))
        note = await credits.held_note(ledger, ids, route.source, credit_id)
        if note is None:
            found.append(Difference("credit note", wanted.code, "missing"))
            continue
        found += [
            Difference(f"credit note {wanted.code} {d.field}", d.source, d.target)
            for d in compare_credit_notes(wanted, note)
        ]
    return found
