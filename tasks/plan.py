"""What the mirror must undergo next to equal the source: one step at a time, decided from state alone.

`next_step` is pure: it never replays a hook's delta, it compares the source's current state with the
mirror's. Applying its steps until it returns None converges the mirror, whatever happened before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from tasks.invoice import SETTLED, ZERO, CreditNote, Invoice, Line, Status, lines_to_add, lines_to_remove


@dataclass(frozen=True)
class CreateMirror:
    """Create the mirror from the source (with the source's number, date, term, lines and marker)."""


@dataclass(frozen=True)
class Finalise:
    """The source is no longer a draft: neither may the mirror be."""


@dataclass(frozen=True)
class EditHeader:
    date: str
    term: int
    discount: Decimal = Decimal(0)
    vat_calc_method: str = "excl"


@dataclass(frozen=True)
class AddLines:
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class RemoveLines:
    lines: tuple[Line, ...]  # as read from the mirror, with their identifiers


@dataclass(frozen=True)
class Pay:
    """Book ``amount`` (negative: a correction) so the mirror's paid amount equals the source's.

    ``credit``: the partial credit this amount is, not money received. Neither HostFact's nor WeFact's API
    can settle a credit invoice against an invoice, so it is booked as a part payment that names it.
    """

    amount: Decimal
    pay_date: str
    payment_method: str
    credit: CreditNote | None = None


@dataclass(frozen=True)
class MirrorCreditNote:
    """Make the source's partial credit invoice in the target: a credit note of its own, with the source's
    number, date and negated lines, beside the mirror of its original."""

    note: CreditNote


@dataclass(frozen=True)
class MarkPaid:
    pay_date: str


@dataclass(frozen=True)
class MarkUnpaid:
    pass


@dataclass(frozen=True)
class Credit:
    """Credit the mirror in full: the target makes the credit invoice and cancels the mirror.

    ``source_credit``: the source's own credit invoice, when known (its number and date are used where the
    target does not number credit invoices itself).
    """

    source_credit: Invoice | None = None


Step = (
    CreateMirror
    | Finalise
    | EditHeader
    | AddLines
    | RemoveLines
    | Pay
    | MarkPaid
    | MarkUnpaid
    | Credit
    | MirrorCreditNote
)


def next_step(source: Invoice, mirror: Invoice | None, *, paid_keeps_amount: bool = True) -> Step | None:
    """The next change that brings ``mirror`` closer to ``source``, or None when they agree.

    ``paid_keeps_amount``: whether marking the mirror paid keeps its paid amount (HostFact/WeFact sales
    invoices do; HostFact purchase invoices reset it to 0, so amounts of a paid one say nothing).
    """
    if mirror is None:
        return CreateMirror()
    # A credit note of the original is the target's as soon as the original's mirror is, whatever became of
    # the original since (a full credit after a partial one).
    held = {note.invoice.id for note in mirror.credit_notes}
    for note in source.credit_notes:
        if note.invoice.id not in held:
            return MirrorCreditNote(note)
    if mirror.status in SETTLED:
        return None
    # A draft mirror is made final first: the source is no longer a draft, and a draft cannot be credited.
    if mirror.status is Status.DRAFT and not source.is_draft:
        return Finalise()
    header = (source.date, source.term, source.discount, source.vat_calc_method)
    if (mirror.date, mirror.term, mirror.discount, mirror.vat_calc_method) != header:
        return EditHeader(*header)
    missing = lines_to_add(source.lines, mirror.lines)
    if missing:
        return AddLines(tuple(missing))
    gone = lines_to_remove(source.lines, mirror.lines)
    # A target refuses to remove every line of an invoice; by now the source's lines were added.
    if gone and len(gone) < len(mirror.lines):
        return RemoveLines(tuple(gone))
    if source.status is Status.CANCELLED:
        # Credited only once its lines are the source's, so the two credit invoices agree.
        return Credit()
    return _payment_step(source, mirror, paid_keeps_amount)


def _payment_step(source: Invoice, mirror: Invoice, paid_keeps_amount: bool) -> Step | None:
    difference = source.amount_paid - mirror.amount_paid
    if source.status is Status.PAID:
        if mirror.status is Status.PAID:
            if paid_keeps_amount and difference:
                return MarkUnpaid()  # paid, but with other payments: reopen and book them again
            return None
        if difference and paid_keeps_amount:
            return _credit_first(mirror, difference) or Pay(
                difference, source.pay_date, source.payment_method
            )
        return MarkPaid(source.pay_date)
    if mirror.status is Status.PAID:
        return MarkUnpaid()
    if difference:
        return _credit_first(mirror, difference) or Pay(difference, source.pay_date, source.payment_method)
    return None


def _credit_first(mirror: Invoice, difference: Decimal) -> Pay | None:
    """The part of ``difference`` that is a partial credit the mirror has not booked yet, booked as such."""
    for note in mirror.credit_notes:
        if note.settles and not note.booked and ZERO < note.amount <= difference:
            return Pay(note.amount, note.invoice.date, "", credit=note)
    return None


def predict(step: Step, source: Invoice, mirror: Invoice | None) -> Invoice:
    """The mirror as it will be after ``step``, by the API's documented rules: for dry runs, and for calls
    whose answer does not carry the document (``markaspaid``)."""
    if isinstance(step, CreateMirror) or mirror is None:
        status = Status.DRAFT if source.is_draft else Status.OPEN
        return replace(
            source,
            id="(new)",
            status=status,
            amount_paid=ZERO,
            pay_date="",
            payment_method="",
            credit_notes=(),
        )
    if isinstance(step, MirrorCreditNote):
        return replace(mirror, credit_notes=(*mirror.credit_notes, replace(step.note, booked=False)))
    if isinstance(step, Finalise):
        return replace(mirror, status=Status.OPEN, code=source.code)
    if isinstance(step, EditHeader):
        return replace(
            mirror,
            date=step.date,
            term=step.term,
            discount=step.discount,
            vat_calc_method=step.vat_calc_method,
        )
    if isinstance(step, AddLines):
        return replace(mirror, lines=mirror.lines + step.lines)
    if isinstance(step, RemoveLines):
        # The mirror's lines less the removed ones: those of the mirror that ``step.lines`` does not hold.
        return replace(mirror, lines=tuple(lines_to_remove(step.lines, mirror.lines)))
    if isinstance(step, Pay):
        paid = mirror.amount_paid + step.amount
        if paid == mirror.amount_incl:
            status = Status.PAID
        elif paid == ZERO:
            status = Status.OPEN
        else:
            status = Status.PARTLY_PAID
        return booked(replace(mirror, amount_paid=paid, status=status, pay_date=step.pay_date), step.credit)
    if isinstance(step, MarkPaid):
        return replace(mirror, status=Status.PAID, pay_date=step.pay_date)
    if isinstance(step, MarkUnpaid):
        return replace(mirror, status=Status.OPEN, amount_paid=ZERO, pay_date="")
    return replace(mirror, status=Status.CANCELLED, amount_paid=ZERO)


def booked(mirror: Invoice, credit: CreditNote | None) -> Invoice:
    """``mirror`` with ``credit`` (if any) noted as booked on it."""
    if credit is None:
        return mirror
    notes = tuple(
        replace(note, booked=True) if note.invoice.id == credit.invoice.id else note
        for note in mirror.credit_notes
    )
    return replace(mirror, credit_notes=notes)
