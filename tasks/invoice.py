"""An invoice as the sync reasons about it, whichever administration and controller it was read from.

The API's field names (`AmountPaid`, `InvoiceCode`, ...) stay in the adapters that parse rows into these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def cents(value: Decimal) -> Decimal:
    """Round to cents as PHP's round() does: half away from zero."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


class Status(Enum):
    DRAFT = "draft"
    OPEN = "open"  # sent (or queued to be sent), nothing paid
    PARTLY_PAID = "partly_paid"
    PAID = "paid"
    CREDIT = "credit"  # a credit invoice (credit note)
    CANCELLED = "cancelled"  # credited in full


# A document whose story is told: a credit invoice, or an original credited in full. Nothing more is mirrored.
SETTLED = frozenset({Status.CANCELLED, Status.CREDIT})


def money(value: object) -> Decimal:
    """An API amount ("199.65", 199.65, "0") as cents."""
    text = str(value).strip() if value is not None else ""
    return Decimal(text or "0").quantize(CENT)


def number(value: object) -> Decimal:
    """A quantity or price, normalised so "150", "150.00" and 150.0 compare equal."""
    text = str(value).strip() if value is not None else ""
    return Decimal(text or "0").normalize() + Decimal(0)


# HostFact keeps percentages as FLOAT fractions and prints them times 100, so 7 % reads back as
# 7.000000000000001 (invoice_api_controller::_show_invoice); it rounds the fraction to 4 places wherever it
# computes with one (functions.php::getLineAmount, invoice::add), so hundredths of a percent are all there is.
_PERCENT = Decimal("0.01")
# Number is a FLOAT column too (installation.sql HostFact_InvoiceElements): six places keep every real
# quantity and drop the float's noise.
_QUANTITY = Decimal("0.000001")


def percentage(value: object) -> Decimal:
    """A VAT or discount percentage (0-100) from an answer, rid of PHP's float noise."""
    return number(number(value).quantize(_PERCENT))


def quantity(value: object) -> Decimal:
    """A line's Number from an answer, rid of float noise."""
    return number(number(value).quantize(_QUANTITY))


@dataclass(frozen=True)
class Line:
    description: str
    quantity: Decimal
    price_excl: Decimal
    tax_percentage: Decimal
    discount_percentage: Decimal = Decimal(0)
    # A subscription line bills ``price_excl`` per period for ``periods`` periods of ``period_unit``
    # (HostFact's Periodic: d, w, m, k, h, j, t) from ``start_period``; its amount is
    # price × periods × quantity (functions.php::getLineAmount). A line without a unit counts one period.
    periods: int = 1
    period_unit: str = ""
    start_period: str = ""
    # The line's id in the administration it was read from; not part of what the line *is*.
    identifier: str = field(default="", compare=False)

    @property
    def content(self) -> tuple[str, Decimal, Decimal, Decimal, Decimal, int, str, str]:
        return (
            self.description,
            self.quantity,
            self.price_excl,
            self.tax_percentage,
            self.discount_percentage,
            self.periods,
            self.period_unit,
            self.start_period,
        )

    @property
    def periodic(self) -> bool:
        return bool(self.period_unit)

    def amount_excl(self) -> Decimal:
        """What the line adds to the invoice before VAT and before the invoice's discount, as HostFact
        computes it with prices excluding VAT (functions.php::getLineAmount)."""
        gross = self.price_excl * self.periods * self.quantity
        return cents(gross) - cents(gross * self.discount_percentage / 100)

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
    # The invoice's own discount percentage, over all lines, and whether prices are read excluding or
    # including VAT (HostFact's Discount and VatCalcMethod, calculateFinancialTotals).
    discount: Decimal = ZERO
    vat_calc_method: str = "excl"
    # The party's name and address as the invoice carries them (API field names), to create it elsewhere.
    party_details: Mapping[str, str] = field(default_factory=dict, compare=False)
    # Partial credits (HostFact's back office): the source's credit invoices of this invoice; in a mirror,
    # those of them the target holds.
    credit_notes: tuple[CreditNote, ...] = field(default=(), compare=False)

    @property
    def is_draft(self) -> bool:
        return self.status is Status.DRAFT or self.code.startswith("[concept")


@dataclass(frozen=True)
class CreditNote:
    """A partial credit of an invoice: the source's own credit invoice (Status 8, negated lines) for a part.

    ``settles``: the source counted it as paid on the original (HostFact adds a partial credit's amount to the
    original's AmountPaid when the original is sent or partly paid, invoice::createCreditInvoice).
    ``booked``: in a mirror's notes, whether that amount was booked on the mirror of the original.
    """

    invoice: Invoice
    settles: bool
    booked: bool = False

    @property
    def amount(self) -> Decimal:
        """What it credits, as a positive amount including VAT."""
        return -self.invoice.amount_incl


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


MARKER_PREFIX = "[factsync:"


def marker(source: str, source_id: str) -> str:
    """What a mirrored document carries (in `ReferenceNumber`) so the id mapping can be rebuilt from it.

    Bracketed, because the API's search is a substring match: "[factsync:hostfact:1]" is not part of
    "[factsync:hostfact:12]", so a search for a marker finds that marker only.
    """
    return f"{MARKER_PREFIX}{source}:{source_id}]"
