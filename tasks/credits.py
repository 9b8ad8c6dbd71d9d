"""Which credit invoices belong to which invoice: links HostFact's API never shows, remembered per route.

HostFact keeps the link in `CorrespondingInvoice`, which neither `invoice show` nor `invoice list` prints.
Two hooks carry it: invoice_is_credited (a full credit names its credit invoice), and invoice_is_created of a
credit invoice, to which factsync's forwarder (deploy/hostfact/hooks.php) adds the original and the
original's Status at that moment. The sync, backfill and audit read the links from here.
"""

from __future__ import annotations

from tasks.hooks import CreditLink, InvoiceRef, credit_invoice_of
from tasks.invoice import Invoice, Status, marker
from tasks.ledger import IdMap, Ledger

# original -> the credit invoice of its full credit
CREDITED_BY = "credited_by"
# partial credit invoice -> "<original> settles|stands"
CREDIT_OF = "credit_of"
# original -> {partial credit invoices}
PARTIAL_CREDITS = "partial_credits"
# original -> {partial credit invoices whose amount is booked on the original's mirror}
BOOKED = "credits_booked"

# invoice::createCreditInvoice: a full credit cancels the original (Status 9) before it makes the credit
# invoice; a partial one adds the credit to the original's AmountPaid only when the original was sent (2) or
# partly paid (3), and leaves a paid (4) or queued (1) one as it was.
FULL_CREDIT = 9
SETTLING = frozenset({2, 3})


async def remember(ids: IdMap, hook: InvoiceRef) -> None:
    """Note the links ``hook`` carries; idempotent, so a hook delivered twice changes nothing."""
    credit = credit_invoice_of(hook)
    if credit is not None:
        await ids.put(CREDITED_BY, str(hook.id), str(credit))
    if not isinstance(hook, CreditLink) or hook.CorrespondingInvoice is None:
        return
    original = str(hook.CorrespondingInvoice)
    if hook.CorrespondingInvoiceStatus == FULL_CREDIT:
        await ids.put(CREDITED_BY, original, str(hook.id))
        return
    settles = hook.CorrespondingInvoiceStatus in SETTLING
    await ids.put(CREDIT_OF, str(hook.id), f"{original} {'settles' if settles else 'stands'}")
    await ids.add(PARTIAL_CREDITS, original, str(hook.id))


async def original_of(ids: IdMap, credit_id: str) -> str | None:
    """The invoice a partial credit invoice credits, when a hook told."""
    link = await ids.get(CREDIT_OF, credit_id)
    return link.split()[0] if link else None


async def document_of(ids: IdMap, invoice_id: str) -> str:
    """The source invoice whose sync answers for ``invoice_id``: its original, for a known partial credit
    (so one lease covers the original, its mirror and its credit notes)."""
    return await original_of(ids, invoice_id) or invoice_id


async def partial_credits(ids: IdMap, original_id: str) -> list[tuple[str, bool]]:
    """(credit invoice id, whether the source counted it as paid on the original), oldest first."""
    found: list[tuple[str, bool]] = []
    for credit_id in sorted(await ids.members(PARTIAL_CREDITS, original_id), key=_numeric):
        link = await ids.get(CREDIT_OF, credit_id) or ""
        found.append((credit_id, link.endswith(" settles")))
    return found


async def booked(ids: IdMap, original_id: str) -> set[str]:
    """The partial credits whose amount is booked on the mirror of ``original_id``."""
    return await ids.members(BOOKED, original_id)


async def note_booked(ids: IdMap, original_id: str, credit_id: str) -> None:
    await ids.add(BOOKED, original_id, credit_id)


async def held_note(ledger: Ledger, ids: IdMap, source: str, credit_id: str) -> Invoice | None:
    """The credit note the target holds for the source's credit invoice ``credit_id`` (of administration
    ``source``): by its remembered id while that carries its marker, else by the marker."""
    found, credit = await ledger.locate(await ids.get("invoice", credit_id), marker(source, credit_id))
    return found if found is not None and found.status is Status.CREDIT else credit


def _numeric(identifier: str) -> tuple[int, str]:
    return (int(identifier), "") if identifier.isdigit() else (0, identifier)
