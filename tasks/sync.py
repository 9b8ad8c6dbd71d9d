"""The sync of one source document into one route's target.

This is the thin first version: it reads the source invoice and records what the target must become;
the ledger adapters that converge the target come next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tasks.client import ApiClient
from tasks.model import Route


@dataclass
class SyncResult:
    status: Literal["done", "ignored"]
    detail: str
    calls: list[str] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)


async def sync_invoice(route: Route, invoice_id: int, *, source: ApiClient, target: ApiClient) -> SyncResult:
    """Read the source invoice and plan the target's state for it."""
    answer = await source.call("invoice", "show", {"Identifier": invoice_id})
    invoice = answer.get("invoice") or {}
    code = str(invoice.get("InvoiceCode", ""))
    calls = [f"{route.source}: invoice.show {invoice_id}"]
    if code.startswith("[concept") and not route.mirror_drafts:
        return SyncResult("ignored", f"invoice {code} is a draft; it is mirrored once it has a number", calls)
    state = {
        "InvoiceCode": code,
        "Status": str(invoice.get("Status", "")),
        "AmountIncl": str(invoice.get("AmountIncl", "")),
        "AmountPaid": str(invoice.get("AmountPaid", "")),
    }
    return SyncResult(
        "done",
        f"{route.ledger} mirror of {code} in {route.target} should be {state}",
        calls,
        planned=[{"target": route.target, "ledger": route.ledger, "state": state}],
    )
