"""Which source invoices a route mirrors, listed in bulk: what `factsync backfill` and `audit` go over."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tasks.adapters import parse_sales_invoice
from tasks.client import ApiClient, Row
from tasks.invoice import Invoice
from tasks.model import Route
from tasks.sync import not_mirrored


async def source_invoices(source: ApiClient, *, since: datetime | None = None) -> list[Row]:
    """Every invoice of the source (paged), or those modified since ``since``; oldest first.

    ``since`` is sent as HostFact's ``modified[from]`` filter, in the administration's wall-clock time.
    """
    filters: dict[str, Any] = {"modified": {"from": since.strftime("%Y-%m-%d %H:%M:%S")}} if since else {}
    rows = await source.list("invoice", **filters)
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
