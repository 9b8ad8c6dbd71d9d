"""How a mirror differs from its source, field by field, in words an operator reads: audit's drift, and what
a sync reports when the target did not take a step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tasks.invoice import SETTLED, Invoice, Line, Status, lines_to_add, lines_to_remove


@dataclass(frozen=True)
class Difference:
    """One field in which the mirror is not what the source says; values as an operator reads them."""

    field: str
    source: str
    target: str


# Every field `compare` reads: the header fields below, "paid" and "lines".
ALL_FIELDS: frozenset[str] = frozenset(
    {"number", "amount", "paid", "date", "discount", "vat", "term", "lines"}
)


def compare(
    source: Invoice,
    mirror: Invoice | None,
    *,
    paid_keeps_amount: bool = True,
    credited: bool = False,
    fields: frozenset[str] = ALL_FIELDS,
) -> list[Difference]:
    """How ``mirror`` differs from ``source``; empty when it is in step.

    ``paid_keeps_amount``: as the ledger says (a paid HostFact purchase invoice shows 0 paid, whatever was).
    ``credited``: the target holds a credit invoice for the mirror (WeFact purchase invoices, which have no
    cancelled status, are credited that way).
    ``fields``: what to compare besides the status; a header audit passes what both list rows carry, so it
    finds exactly the drift a whole comparison finds in those fields.
    """
    if mirror is None:
        return [Difference("mirror", source.code, "missing")]
    if source.status is Status.CANCELLED and (mirror.status is Status.CANCELLED or credited):
        return []
    found: list[Difference] = []
    if mirror.status is not source.status:
        found.append(Difference("status", source.status.value, mirror.status.value))
    if source.status is Status.CANCELLED or mirror.status in SETTLED:
        # A credited invoice's amounts are the credit's business, not the original's.
        return found
    if not source.is_draft:
        found += _differing(source, mirror, ("number",), fields)
    found += _differing(source, mirror, ("amount",), fields)
    if (
        "paid" in fields
        and (paid_keeps_amount or mirror.status is not Status.PAID)
        and mirror.amount_paid != source.amount_paid
    ):
        found.append(Difference("paid", str(source.amount_paid), str(mirror.amount_paid)))
    found += _differing(source, mirror, ("date", "discount", "vat", "term"), fields)
    return found + (_line_differences(source, mirror) if "lines" in fields else [])


def compare_credit_notes(
    source: Invoice, note: Invoice, *, fields: frozenset[str] = ALL_FIELDS
) -> list[Difference]:
    """How a credit note in the target differs from the source's credit invoice it mirrors: status, number,
    date, total and lines (its term and paid amount are each target's own: HostFact's purchase add ignores
    Term, WeFact shows a credit invoice as paid). ``fields`` as for `compare`."""
    found: list[Difference] = []
    if note.status is not Status.CREDIT:
        found.append(Difference("status", Status.CREDIT.value, note.status.value))
    found += _differing(source, note, ("number", "date", "amount"), fields)
    return found + (_line_differences(source, note) if "lines" in fields else [])


# The header fields an operator reads, by the name a difference shows.
_HEADER: dict[str, Callable[[Invoice], object]] = {
    "number": lambda invoice: invoice.code,
    "amount": lambda invoice: invoice.amount_incl,
    "date": lambda invoice: invoice.date,
    "discount": lambda invoice: invoice.discount,
    "vat": lambda invoice: invoice.vat_calc_method,
    "term": lambda invoice: invoice.term,
}


def _differing(
    source: Invoice, other: Invoice, names: tuple[str, ...], fields: frozenset[str]
) -> list[Difference]:
    return [
        Difference(name, str(_HEADER[name](source)), str(_HEADER[name](other)))
        for name in names
        if name in fields and _HEADER[name](source) != _HEADER[name](other)
    ]


def _line_differences(source: Invoice, other: Invoice) -> list[Difference]:
    missing = lines_to_add(source.lines, other.lines)
    extra = lines_to_remove(source.lines, other.lines)
    if not (missing or extra):
        return []
    # Each side shows the lines the other lacks.
    return [Difference("lines", _describe(missing), _describe(extra))]


def _describe(lines: list[Line]) -> str:
    if not lines:
        return "-"
    return "; ".join(_line(line) for line in lines)


def _line(line: Line) -> str:
    text = f"{line.quantity}× {line.description} à {line.price_excl} ({line.tax_percentage}%"
    if line.discount_percentage:
        text += f", -{line.discount_percentage}%"
    if line.periodic:
        text += f", {line.periods}×{line.period_unit} from {line.start_period or '?'}"
    return text + ")"


def describe(differences: list[Difference]) -> str:
    return "; ".join(f"{d.field}: source {d.source}, target {d.target}" for d in differences)
