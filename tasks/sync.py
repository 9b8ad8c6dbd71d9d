"""The sync of one source invoice into one route's target: read both, then converge the target.

Level-triggered: it never replays a hook; it reads the source's current state and takes the mirror there
step by step (`tasks.plan.next_step`), so duplicates, re-deliveries, reordering and retries are harmless.
The caller holds the document's lock, so the mirror read here is the one the steps change.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tasks import credits
from tasks.adapters import ledger_for, read_sales_invoice
from tasks.client import ApiClient
from tasks.drift import compare, compare_credit_notes, describe
from tasks.errors import PermanentError, TransientError
from tasks.invoice import CreditNote, Invoice, Status, marker
from tasks.ledger import IdMap, Ledger
from tasks.model import Route
from tasks.plan import (
    AddLines,
    CreateMirror,
    Credit,
    EditHeader,
    Finalise,
    MarkUnpaid,
    MirrorCreditNote,
    Pay,
    RemoveLines,
    Step,
    booked,
    next_step,
    predict,
)

# More steps than converging any invoice takes (create, header, lines, unpay, pay, mark paid, ...), before
# its partial credits (two steps each: the credit note, and its amount booked).
MAX_STEPS = 12

# A step the target took as asked is never followed at once by one of these: when it is, the target did not
# do what the step meant (it changed the VAT of the lines it was given, ignored a field, booked another
# amount), and writing again would only repeat it, adding lines without bound.
_NOT_AFTER: dict[type, tuple[type, ...]] = {
    # Not EditHeader: HostFact's creditinvoice add ignores Term (creditinvoice_api_controller), so a purchase
    # mirror's header is mended by an edit right after it is made.
    CreateMirror: (AddLines, RemoveLines),
    EditHeader: (EditHeader,),
    AddLines: (AddLines,),
    RemoveLines: (RemoveLines, AddLines),
    Finalise: (Finalise,),
    Pay: (Pay,),
    MarkUnpaid: (MarkUnpaid,),
}


# A bulk run that listed the target and found no mirror of an invoice leaves this hint (the listing's time),
# so the sync it schedules makes the mirror without searching the target for it first. A sync writes CREATING
# (and uses the hint up) before it adds a mirror, and forgets CREATING once the id map holds the mirror: the
# hint counts only while neither the id map nor CREATING says a mirror may have been made since, and only this
# long (a Redis restored from an older copy must not make a hint outlive the mirror it denies).
ABSENT = "absent"
CREATING = "creating"
HINT_SECONDS = 24 * 3600


def not_mirrored(route: Route, invoice: Invoice) -> str | None:
    """Why ``route`` keeps no mirror of ``invoice`` (a sync records it as ignored), or None.

    Backfill and audit skip by the same rules.
    """
    if invoice.is_draft and not route.mirror_drafts:
        return "draft"
    if invoice.status is Status.CREDIT:
        return "credit invoice"
    if route.ledger == "purchase" and invoice.party not in route.creditors:
        return "debtor without a creditor"
    return None


_SKIPPED: dict[str, Callable[[Route, Invoice], str]] = {
    "draft": lambda route, invoice: "a draft; it is mirrored once it has a number",
    "credit invoice": lambda route, invoice: (
        "a credit invoice: mirrored by its original's sync, a full credit with the original, a partial "
        "one as a credit note once its invoice_is_created hook named the original (factsync's hooks.php "
        "adds it)"
    ),
    "debtor without a creditor": lambda route, invoice: (
        f"debtor {invoice.party} has no creditor in route {route.name}"
    ),
}


@dataclass
class SyncResult:
    status: Literal["done", "ignored"]
    detail: str
    calls: list[str] = field(default_factory=list)
    # Dry run: the steps that would have been taken.
    planned: list[str] = field(default_factory=list)


async def sync_invoice(
    route: Route,
    invoice_id: int | str,
    *,
    source: ApiClient,
    target: ApiClient,
    ids: IdMap,
    calls: list[str] | None = None,
) -> SyncResult:
    """Bring the target of ``route`` in step with source invoice ``invoice_id``.

    ``calls``: where to note each API call as it is made (the caller keeps them when the sync fails).
    """
    calls = [] if calls is None else calls
    calls.append(f"{source.name}: invoice.show {invoice_id}")
    try:
        wanted = await read_sales_invoice(source, invoice_id)
    except PermanentError as refused:
        # HostFact fires invoice_is_created inside the request's transaction (invoice_api_controller::
        # add_api_action and credit_api_action: HostFact_API::beginTransaction), so a sync may read before
        # the commit and be told there is no such invoice. Read again after a backoff; an invoice truly gone
        # fails once the tries are spent, with this reason.
        raise TransientError(
            f"the source does not show invoice {invoice_id} (not committed yet, or gone): {refused.message}",
            exchange=refused.exchange,
        ) from refused
    skip = not_mirrored(route, wanted)
    if skip is not None:
        return SyncResult("ignored", f"{wanted.code}: {_SKIPPED[skip](route, wanted)}", calls)
    ledger = ledger_for(route, target, ids, calls, wanted.party)
    notes: list[CreditNote] = []
    for credit_id, settles in await credits.partial_credits(ids, wanted.id):
        calls.append(f"{source.name}: invoice.show {credit_id} (a partial credit of {wanted.code})")
        note = ledger.represent(await read_sales_invoice(source, credit_id))
        notes.append(CreditNote(note, settles))
    wanted = replace(ledger.represent(wanted), credit_notes=tuple(notes))
    sync = _Convergence(route, wanted, ledger, ids, source, calls)
    return await sync.run()


class _Convergence:
    def __init__(
        self, route: Route, wanted: Invoice, ledger: Ledger, ids: IdMap, source: ApiClient, calls: list[str]
    ) -> None:
        self.route = route
        self.wanted = wanted
        self.ledger = ledger
        self.ids = ids
        self.source = source
        self.calls = calls
        self.marker = marker(route.source, wanted.id)
        self.notes: list[str] = []
        self._source_credit_read = False
        self._source_credit_cache: Invoice | None = None

    async def run(self) -> SyncResult:
        mirror, credit = await self._locate()
        if mirror is not None:
            mirror = replace(mirror, credit_notes=await self._held_notes())
        if not self.route.dry_run:
            await self._check_held(mirror)
        settled = False
        if (
            mirror is not None
            and mirror.status is Status.CANCELLED
            and self.wanted.status is Status.CANCELLED
            and not self.route.dry_run
        ):
            # Numbered first: a credit invoice the target made in a run that ended before it got its source
            # number (a lost answer) may hold the number a partial credit note of this invoice needs.
            await self._map_credit(credit)
            settled = True
        fresh = True
        taken: list[str] = []
        refused: Step | None = None
        limit = MAX_STEPS + 2 * len(self.wanted.credit_notes)
        for _ in range(limit):
            step = next_step(self.wanted, mirror, paid_keeps_amount=self.ledger.paid_keeps_amount)
            if step is None:
                break
            if isinstance(step, Pay) and not fresh and mirror is not None and not self.route.dry_run:
                # A payment's amount is computed from the mirror as the API says it is, never as predicted.
                mirror, fresh = self._dressed(await self.ledger.read(mirror.id), mirror), True
                continue
            if isinstance(step, Credit):
                step = Credit(await self._source_credit())
            if self.route.dry_run:
                taken.append(_describe(step))
                mirror, fresh = predict(step, self.wanted, mirror), False
                continue
            if isinstance(step, CreateMirror):
                # Before the add: should it land and this sync die before the id map holds it, no listing's
                # hint may make the next sync skip the search for it. The hint is used up here, not when read,
                # so a sync retried before it made anything still makes the mirror without a search.
                await self.ids.put(CREATING, self.wanted.id, str(round(time.time())))
                await self.ids.forget(ABSENT, self.wanted.id)
            try:
                applied = await self.ledger.apply(step, self.wanted, mirror, self._marker_for(step))
            except PermanentError:
                # The target refused ("The invoice is already paid"): its state is not what was read.
                # Read it again and decide; refusing the same step twice is a real failure.
                if step == refused or mirror is None:
                    raise
                refused = step
                mirror, fresh = self._dressed(await self.ledger.read(mirror.id), mirror), True
                continue
            taken.append(_describe(step))
            if isinstance(step, CreateMirror) and applied.mirror is not None:
                await self.ids.put("invoice", self.wanted.id, applied.mirror.id)
                await self.ids.forget(CREATING, self.wanted.id)
            before = mirror
            mirror, fresh = applied.mirror or mirror, applied.fresh
            if before is not None and mirror is not None:
                mirror = self._dressed(mirror, before)
            if isinstance(step, MirrorCreditNote):
                mirror = await self._note_made(step.note, applied.note, mirror)
            if isinstance(step, Pay) and step.credit is not None and mirror is not None:
                await credits.note_booked(self.ids, self.wanted.id, step.credit.invoice.id)
                mirror = booked(mirror, step.credit)
            if fresh:
                await self._check_taken(step, mirror)
            credit = applied.credit or credit
        else:
            raise PermanentError(f"{self.wanted.code} did not converge in {limit} steps: {taken}")
        if self.wanted.status is Status.CANCELLED and not self.route.dry_run and not settled:
            await self._map_credit(credit)
        return self._result(mirror, taken)

    def _marker_for(self, step: Step) -> str:
        if isinstance(step, MirrorCreditNote):
            return marker(self.route.source, step.note.invoice.id)
        return self.marker

    @staticmethod
    def _dressed(mirror: Invoice, before: Invoice) -> Invoice:
        """A mirror as the API answered it, with what the API does not say: its partial credits held."""
        return replace(mirror, credit_notes=before.credit_notes)

    async def _held_notes(self) -> tuple[CreditNote, ...]:
        """The source's partial credits of this invoice that the target holds as credit notes."""
        if not self.wanted.credit_notes:
            return ()
        done = await credits.booked(self.ids, self.wanted.id)
        held: list[CreditNote] = []
        for note in self.wanted.credit_notes:
            source_id = note.invoice.id
            document = await credits.held_note(self.ledger, self.ids, self.route.source, source_id)
            if document is None:
                continue
            await self.ids.put("invoice", source_id, document.id)
            held.append(replace(note, booked=source_id in done))
        return tuple(held)

    async def _note_made(
        self, note: CreditNote, made: Invoice | None, mirror: Invoice | None
    ) -> Invoice | None:
        """Map the credit note the target made to the source's, and fail when it is not what was sent."""
        if made is None:
            raise PermanentError(
                f"{self.ledger.name} answered no document for credit note {note.invoice.code}"
            )
        await self.ids.put("invoice", note.invoice.id, made.id)
        differences = compare_credit_notes(note.invoice, made)
        if differences:
            raise PermanentError(
                f"{self.ledger.name} did not make credit note {note.invoice.code} as sent (id {made.id}): "
                f"{describe(differences)}"
            )
        self.notes.append(f"credit note {note.invoice.code} mirrored as {made.code}")
        if mirror is None:
            return None
        return replace(mirror, credit_notes=(*mirror.credit_notes, replace(note, booked=False)))

    async def _locate(self) -> tuple[Invoice | None, Invoice | None]:
        """The mirror by the remembered id, else by its marker (the id was lost or never stored)."""
        known = await self.ids.get("invoice", self.wanted.id)
        if known is None and await self._listed_absent():
            return None, None
        mirror, credit = await self.ledger.locate(known, self.marker)
        if known and (mirror is None or mirror.id != known):
            await self.ids.forget("invoice", self.wanted.id)
        if mirror is not None and mirror.id != known:
            await self.ids.put("invoice", self.wanted.id, mirror.id)
            # Found: whatever a listing said or a sync set out to do, the id map now says it.
            await self.ids.forget(CREATING, self.wanted.id)
            await self.ids.forget(ABSENT, self.wanted.id)
        return mirror, credit

    async def _listed_absent(self) -> bool:
        """Whether a bulk run's listing of the target, taken after anything the id map knows, found no mirror,
        and no sync has set out to make one since."""
        hint = await self.ids.get(ABSENT, self.wanted.id)
        if hint is None:
            return False
        try:
            fresh = time.time() - float(hint) < HINT_SECONDS
        except ValueError:
            return False
        return fresh and await self.ids.get(CREATING, self.wanted.id) is None

    async def _check_taken(self, step: Step, mirror: Invoice | None) -> None:
        """Fail before writing again when the target's answer shows ``step`` did not do what it meant.

        The document is then held: later syncs write nothing while source and mirror stay as they were (a
        later hook would otherwise add the same lines once more), until either changes (a person mends the
        mirror or the target's rules, or the source moves on)."""
        after = next_step(self.wanted, mirror, paid_keeps_amount=self.ledger.paid_keeps_amount)
        if after is None or not isinstance(after, _NOT_AFTER.get(type(step), ())):
            return
        if isinstance(step, Pay) and isinstance(after, Pay) and _credit_id(step) != _credit_id(after):
            # A partial credit's amount, then another's or the money paid beside it: each its own booking.
            return
        differences = compare(self.wanted, mirror, paid_keeps_amount=self.ledger.paid_keeps_amount)
        reason = (
            f"{self.wanted.code}: {self.ledger.name} did not take {_describe(step)} as sent, and the next "
            f"step would be {_describe(after)}; stopped before writing again. Differences: "
            f"{describe(differences) or 'none visible'}"
        )
        await self.ids.put("held", self.wanted.id, f"{_fingerprint(self.wanted, mirror)} {reason}")
        raise PermanentError(reason)

    async def _check_held(self, mirror: Invoice | None) -> None:
        held = await self.ids.get("held", self.wanted.id)
        if held is None:
            return
        fingerprint, _, reason = held.partition(" ")
        if fingerprint == _fingerprint(self.wanted, mirror):
            raise PermanentError(
                f"held, nothing written: source and mirror are as when the target did not take a step. "
                f"Mend the mirror or the target's rules in {self.ledger.name}, then retry. {reason}"
            )
        await self.ids.forget("held", self.wanted.id)

    async def _source_credit(self) -> Invoice | None:
        """The source's credit invoice for this original, known from its invoice_is_credited hook."""
        if self._source_credit_read:
            return self._source_credit_cache
        self._source_credit_read = True
        credit_id = await self.ids.get(credits.CREDITED_BY, self.wanted.id)
        if credit_id:
            self.calls.append(f"{self.source.name}: invoice.show {credit_id}")
            self._source_credit_cache = await read_sales_invoice(self.source, credit_id)
        return self._source_credit_cache

    async def _map_credit(self, credit: Invoice | None) -> None:
        """Mark and number the target's credit invoice, map it to the source's, and compare their totals."""
        source_credit = await self._source_credit()
        if credit is None:
            _, credit = await self.ledger.find(self.marker)
        if credit is None:
            self.notes.append("the target's credit invoice was not found")
            return
        credit = await self.ledger.settle_credit(credit, self.marker, source_credit)
        if source_credit is None:
            self.notes.append(
                f"credit invoice {credit.code} in {self.ledger.name}; the source's is not known"
            )
            return
        await self.ids.put("invoice", source_credit.id, credit.id)
        if abs(source_credit.amount_incl) != abs(credit.amount_incl):
            raise PermanentError(
                f"credit invoices disagree: {source_credit.code} totals {source_credit.amount_incl}, "
                f"{credit.code} in {self.ledger.name} totals {credit.amount_incl}"
            )
        self.notes.append(f"credit invoice {source_credit.code} mirrored as {credit.code}")

    def _result(self, mirror: Invoice | None, taken: list[str]) -> SyncResult:
        code = self.wanted.code
        if self.route.dry_run:
            detail = (
                f"dry run: {code} would take {len(taken)} step(s)" if taken else f"dry run: {code} in step"
            )
            return SyncResult("done", detail, self.calls, planned=taken)
        state = f"{mirror.status.value}, paid {mirror.amount_paid}" if mirror else "absent"
        did = "; ".join(taken) if taken else "already in step"
        notes = "".join(f"; {note}" for note in self.notes)
        where = f"{self.ledger.name} {mirror.code if mirror else ''}".strip()
        return SyncResult("done", f"{code} → {where} ({state}): {did}{notes}", self.calls)


def _credit_id(step: Pay) -> str:
    return step.credit.invoice.id if step.credit is not None else ""


def _fingerprint(source: Invoice, mirror: Invoice | None) -> str:
    """What source and mirror are, as far as a sync writes it: header, status, amounts and lines."""

    def state(invoice: Invoice | None) -> object:
        if invoice is None:
            return None
        lines = sorted(repr(line.content) for line in invoice.lines)
        return (
            invoice.code,
            invoice.status.value,
            invoice.date,
            invoice.term,
            str(invoice.discount),
            invoice.vat_calc_method,
            str(invoice.amount_paid),
            lines,
        )

    return hashlib.sha256(repr((state(source), state(mirror))).encode()).hexdigest()[:24]


def _describe(step: Step) -> str:
    name = type(step).__name__
    fields: dict[str, Any] = {
        key: value
        for key, value in vars(step).items()
        if key not in ("lines", "source_credit", "credit", "note") and value
    }
    for key in ("credit", "note"):
        if getattr(step, key, None) is not None:
            fields[key] = getattr(step, key).invoice.code
    if hasattr(step, "lines"):
        fields["lines"] = len(step.lines)
    args = ", ".join(f"{key}={value}" for key, value in fields.items())
    return f"{name}({args})"
