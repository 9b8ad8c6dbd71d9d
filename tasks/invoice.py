"""An invoice as the sync reasons about it, whichever administration and controller it was read from.

The API's field names (`AmountPaid`, `InvoiceCode`, ...) stay in the adapters that parse rows into these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import Enum

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


class Status(Enum):
    DRAFT = "draft"
    OPEN = "open"  # sent (or queued to be sent), nothing paid
    PARTLY_PAID = "partly_paid"
    PAID = "paid"
    CREDIT = "credit"  # a credit invoice (credit note)
    CANCELLED = "cancelled"  # credited in full


def money(value: object) -> Decimal:
    """An API amount ("199.65", 199.65, "0") as cents."""
    text = str(value).strip() if value is not None else ""
    return Decimal(text or "0").quantize(CENT)


def number(value: object) -> Decimal:
    """A quantity, price or percentage, normalised so "150", "150.00" and 150.0 compare equal."""
    text = str(value).strip() if value is not None else ""
    return Decimal(text or "0").normalize() + Decimal(0)


@dataclass(frozen=True)
class Line:
    description: str
    quantity: Decimal
    price_excl: Decimal
    tax_percentage: Decimal
    discount_percentage: Decimal = Decimal(0)
    # The line's id in the administration it was read from; not part of what the line *is*.
    identifier: str = field(default="", compare=False)

    @property
    def content(self) -> tuple[str, Decimal, Decimal, Decimal, Decimal]:
        return (
            self.description,
            self.quantity,
            self.price_excl,
            self.tax_percentage,
            self.discount_percentage,
        )

    def negated(self) -> Line:
        return replace(self, price_excl=-self.price_excl, identifier="")


@dataclass(frozen=True)
class Invoice:
    id: str
    code: str
    status: Status
    # The debtor code (sales) or creditor code (purchase) in the invoice's own administration.
    party: str
    date: str
    term: int
    amount_incl: Decimal
    amount_paid: Decimal
    lines: tuple[Line, ...] = ()
    pay_date: str = ""
    payment_method: str = ""
    reference: str = ""
    # The party's name and address as the invoice carries them (API field names), to create it elsewhere.
    party_details: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_draft(self) -> bool:
        return self.status is Status.DRAFT or self.code.startswith("[concept")


def lines_to_add(source: tuple[Line, ...], mirror: tuple[Line, ...]) -> list[Line]:
    """Source lines the mirror lacks, counting duplicates (two identical lines are two lines)."""
    missing = Counter(line.content for line in source) - Counter(line.content for line in mirror)
    wanted: list[Line] = []
    for line in source:
        if missing[line.content] > 0:
            missing[line.content] -= 1
            wanted.append(line)
    return wanted


def lines_to_remove(source: tuple[Line, ...], mirror: tuple[Line, ...]) -> list[Line]:
    """Mirror lines the source no longer has."""
    return lines_to_add(mirror, source)


def marker(source: str, source_id: str) -> str:
    """What a mirrored document carries (in `ReferenceNumber`) so the id mapping can be rebuilt from it.

    Bracketed, because the API's search is a substring match: "[factsync:hostfact:1]" is not part of
    "[factsync:hostfact:12]", so a search for a marker finds that marker only.
    """
    return f"[factsync:{source}:{source_id}]"
