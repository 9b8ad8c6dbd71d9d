"""Rebuild a route's id mapping from the markers its mirrors carry in the target (invariant 6)."""

from __future__ import annotations

import re
from collections.abc import Callable

from tasks.client import ApiClient
from tasks.ledger import IdMap
from tasks.model import Route

# Credit invoices carry their original's marker; they are mapped when the original syncs again.
_CREDIT_STATUS = "8"


async def rebuild_id_map(
    route: Route, target: ApiClient, ids: IdMap, *, progress: Callable[[int, int], None] | None = None
) -> int:
    """Map every marked mirror of ``route`` in its target to its source document; returns how many."""
    controller = "creditinvoice" if route.ledger == "purchase" else "invoice"
    prefix = f"[factsync:{route.source}:"
    pattern = re.compile(re.escape(prefix) + r"(\d+)\]")
    rows = await target.list(controller, searchat="ReferenceNumber", searchfor=prefix)
    mapped = 0
    for done, row in enumerate(rows, start=1):
        if str(row.get("Status")) != _CREDIT_STATUS:
            reference = row.get("ReferenceNumber")
            if reference is None:
                # List rows may leave the reference out; the document itself has it.
                shown = await target.call(controller, "show", {"Identifier": row["Identifier"]})
                reference = shown[controller].get("ReferenceNumber", "")
            match = pattern.fullmatch(str(reference))
            if match:
                await ids.put("invoice", match.group(1), str(row["Identifier"]))
                mapped += 1
        if progress is not None:
            progress(done, len(rows))
    return mapped
