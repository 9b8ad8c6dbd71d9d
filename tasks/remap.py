"""Rebuild a route's id mapping from the markers its mirrors carry in the target (invariant 6)."""

from __future__ import annotations

import re
from collections.abc import Callable

from tasks.adapters import ledger_for
from tasks.client import ApiClient
from tasks.invoice import marker
from tasks.ledger import IdMap
from tasks.model import Route


async def rebuild_id_map(
    route: Route, target: ApiClient, ids: IdMap, *, progress: Callable[[int, int], None] | None = None
) -> int:
    """Map every marked mirror of ``route`` in its target to its source document; returns how many."""
    prefix = marker(route.source, "")[:-1]
    pattern = re.compile(re.escape(prefix) + r"(\d+)\]")
    # Credit invoices carry their original's marker; they are mapped when the original syncs again.
    marked = await ledger_for(route, target, ids, []).marked(prefix)
    mapped = 0
    for done, (reference, document_id) in enumerate(marked, start=1):
        match = pattern.fullmatch(reference)
        if match:
            await ids.put("invoice", match.group(1), document_id)
            mapped += 1
        if progress is not None:
            progress(done, len(marked))
    return mapped
