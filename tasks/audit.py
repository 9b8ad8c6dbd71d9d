"""Compare a route's target with its source, invoice by invoice: status, number, amounts, paid amount, lines.

`compare` is pure; `audit_route` reads both administrations (read only) and lists what drifted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from tasks.adapters import PurchaseLedger, SalesLedger, parse_sales_invoice
from tasks.backfill import source_invoices, to_mirror
from tasks.client import ApiClient
from tasks.invoice import Invoice, Line, Status, lines_to_add, lines_to_remove, marker
from tasks.ledger import IdMap
from tasks.model import Route
from tasks.plan import next_step
from tasks.sync import not_mirrored

_SETTLED = (Status.CANCELLED, Status.CREDIT)


@dataclass(frozen=True)
class Difference:
    """One field in which the mirror is not what the source says; values as an operator reads them."""

    field: str
    source: str
    target: str


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


def compare(
    source: Invoice, mirror: Invoice | None, *, paid_keeps_amount: bool = True, credited: bool = False
) -> list[Difference]:
    """How ``mirror`` differs from ``source``; empty when it is in step.

    ``paid_keeps_amount``: as the ledger says (a paid HostFact purchase invoice shows 0 paid, whatever was).
    ``credited``: the target holds a credit invoice for the mirror (WeFact purchase invoices, which have no
    cancelled status, are credited that way).
    """
    if mirror is None:
        return [Difference("mirror", source.code, "missing")]
    if source.status is Status.CANCELLED and (mirror.status is Status.CANCELLED or credited):
        return []
    found: list[Difference] = []
    if mirror.status is not source.status:
        found.append(Difference("status", source.status.value, mirror.status.value))
    if source.status is Status.CANCELLED or mirror.status in _SETTLED:
        # A credited invoice's amounts are the credit's business, not the original's.
        return found
    if mirror.code != source.code and not source.is_draft:
        found.append(Difference("number", source.code, mirror.code))
    if mirror.amount_incl != source.amount_incl:
        found.append(Difference("amount", str(source.amount_incl), str(mirror.amount_incl)))
    if (paid_keeps_amount or mirror.status is not Status.PAID) and mirror.amount_paid != source.amount_paid:
        found.append(Difference("paid", str(source.amount_paid), str(mirror.amount_paid)))
    if mirror.date != source.date:
        found.append(Difference("date", source.date, mirror.date))
    if mirror.term != source.term:
        found.append(Difference("term", str(source.term), str(mirror.term)))
    missing = lines_to_add(source.lines, mirror.lines)
    extra = lines_to_remove(source.lines, mirror.lines)
    if missing or extra:
        # Each side shows the lines the other lacks.
        found.append(Difference("lines", _describe(missing), _describe(extra)))
    return found


def _describe(lines: list[Line]) -> str:
    if not lines:
        return "-"
    return "; ".join(
        f"{line.quantity}× {line.description} à {line.price_excl} ({line.tax_percentage}%)" for line in lines
    )


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
    for count, listed in enumerate(wanted, start=1):
        drift = await _audit_one(route, listed.id, source, target, ids, report)
        if drift is not None:
            report.drifts.append(drift)
        if progress is not None:
            progress(count, len(wanted))
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
    journal: list[str] = []
    ledger: SalesLedger | PurchaseLedger
    if route.ledger == "purchase":
        ledger = PurchaseLedger(target, ids, journal, creditor=route.creditors[wanted.party])
    else:
        ledger = SalesLedger(target, ids, journal)
    mark = marker(route.source, wanted.id)
    mirror = await _locate(ledger, ids, wanted.id, mark)
    credited = False
    if mirror is not None and wanted.status is Status.CANCELLED and mirror.status is not Status.CANCELLED:
        _, credit = await ledger.find(mark)
        credited = credit is not None
    differences = compare(wanted, mirror, paid_keeps_amount=ledger.paid_keeps_amount, credited=credited)
    if not differences:
        return None
    fixable = next_step(wanted, mirror, paid_keeps_amount=ledger.paid_keeps_amount) is not None
    return Drift(wanted.id, wanted.code, tuple(differences), mirror.id if mirror else "", fixable)


async def _locate(
    ledger: SalesLedger | PurchaseLedger, ids: IdMap, source_id: str, mark: str
) -> Invoice | None:
    """The mirror by the remembered id when it carries the marker, else by the marker (as the sync does)."""
    known = await ids.get("invoice", source_id)
    if known:
        mirror = await ledger.read(known)
        if mirror is not None and mirror.reference == mark:
            return mirror
    mirror, _ = await ledger.find(mark)
    return mirror
