"""How a mirror differs from its source, field by field, in words an operator reads: audit's drift, and what
a sync reports when the target did not take a step."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.invoice import SETTLED, Invoice, Line, Status, lines_to_add, lines_to_remove


@dataclass(frozen=True)
class Difference:
    """One field in which the mirror is not what the source says; values as an operator reads them."""

    field: str
    source: str
    target: str


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
    if source.status is Status.CANCELLED or mirror.status in SETTLED:
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
    if mirror.discount != source.discount:
        found.append(Difference("discount", str(source.discount), str(mirror.discount)))
    if mirror.vat_calc_method != source.vat_calc_method:
        found.append(Difference("vat", source.vat_calc_method, mirror.vat_calc_method))
    if mirror.term != source.term:
        found.append(Difference("term", str(source.term), str(mirror.term)))
    missing = lines_to_add(source.lines, mirror.lines)
    extra = lines_to_remove(source.lines, mirror.lines)
    if missing or extra:
        # Each side shows the lines the other lacks.
        found.append(Difference("lines", _describe(missing), _describe(extra)))
    return found


def compare_credit_notes(source: Invoice, note: Invoice) -> list[Difference]:
    """How a credit note in the target differs from the source's credit invoice it mirrors: status, number,
    date, total and lines (its term and paid amount are each target's own: HostFact's purchase add ignores
    Term, WeFact shows a credit invoice as paid)."""
    found: list[Difference] = []
    if note.status is not Status.CREDIT:
        found.append(Difference("status", Status.CREDIT.value, note.status.value))
    if note.code != source.code:
        found.append(Difference("number", source.code, note.code))
    if note.date != source.date:
        found.append(Difference("date", source.date, note.date))
    if note.amount_incl != source.amount_incl:
        found.append(Difference("amount", str(source.amount_incl), str(note.amount_incl)))
    missing = lines_to_add(source.lines, note.lines)
    extra = lines_to_remove(source.lines, note.lines)
    if missing or extra:
        found.append(Difference("lines", _describe(missing), _describe(extra)))
    return found


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
