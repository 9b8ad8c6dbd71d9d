"""Compare a route's target with its source, invoice by invoice: status, number, amounts, paid amount, lines.

`compare` is pure; `audit_route` reads both administrations (read only) and lists what drifted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from tasks import credits
from tasks.adapters import ledger_for, parse_sales_invoice
from tasks.backfill import source_invoices, to_mirror
from tasks.client import ApiClient
from tasks.drift import Difference, compare, compare_credit_notes
from tasks.invoice import Status, marker
from tasks.ledger import IdMap, Ledger
from tasks.model import Route
from tasks.plan import next_step
from tasks.sync import not_mirrored


@dataclass(frozen=True)
class Drift:
    source_id: str
    code: str
    differences: tuple[Difference, ...]
    mirror_id: str = ""
    # Whether a sync would change the mirror (the plan has a step for it); the rest needs a person.
    fixable: bool = True


@dataclass
class AuditReport:
    route: str
    listed: int = 0
    compared: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    drifts: list[Drift] = field(default_factory=list)


async def audit_route(
    route: Route,
    *,
    source: ApiClient,
    target: ApiClient,
    ids: IdMap,
    since: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Read every invoice ``route`` mirrors (or those modified since ``since``) and its mirror; list drift.

    Read only: the id map is consulted, never written. Two reads per invoice, through the clients'
    throttle.
    """
    rows = await source_invoices(source, since=since)
    wanted, skipped = to_mirror(route, rows)
    report = AuditReport(route.name, listed=len(rows), skipped=skipped)
    audited = [invoice.id for invoice in wanted]
    # A partial credit made since ``since`` changed its original, which may not be listed itself.
    for row in rows:
        original = await credits.original_of(ids, str(row["Identifier"]))
        if original is not None and original not in audited:
            audited.append(original)
    for count, source_id in enumerate(audited, start=1):
        drift = await _audit_one(route, source_id, source, target, ids, report)
        if drift is not None:
            report.drifts.append(drift)
        if progress is not None:
            progress(count, len(audited))
    return report


async def _audit_one(
    route: Route, source_id: str, source: ApiClient, target: ApiClient, ids: IdMap, report: AuditReport
) -> Drift | None:
    wanted = parse_sales_invoice(await source.show("invoice", identifier=source_id))
    skip = not_mirrored(route, wanted)
    if skip is not None:  # it changed since the listing
        report.skipped[skip] = report.skipped.get(skip, 0) + 1
        return None
    report.compared += 1
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
