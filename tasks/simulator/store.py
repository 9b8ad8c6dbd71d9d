"""The state of one administration: records per table, number sequences and the clock."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from tasks.protocol import Dialect
from tasks.simulator.envelope import Record

Table = Literal["invoices", "creditinvoices", "debtors", "creditors"]
Sequence = Literal["invoice", "concept", "creditinvoice", "debtor", "creditor"]

# Number formats as a fresh HostFact/WeFact administration hands them out.
_PREFIXES: dict[Sequence, str] = {
    "invoice": "F",
    "concept": "[concept]",
    "creditinvoice": "CF",
    "debtor": "DB",
    "creditor": "CD",
}
_WIDTH = 4
CONCEPT_PREFIX = "[concept]"
INVOICE_STATUSES: dict[Dialect, frozenset[int]] = {
    "hostfact": frozenset({0, 1, 2, 3, 4, 8, 9}),
    "wefact": frozenset({0, 2, 3, 4, 8, 9}),
}
CREDITINVOICE_STATUSES: dict[Dialect, frozenset[int]] = {
    "hostfact": frozenset({0, 1, 2, 3, 8, 9}),
    "wefact": frozenset({1, 2, 3, 8}),
}


def is_draft_code(code: str) -> bool:
    # HostFact tests the first 8 characters, "[concept", in payment actions; 9 in add/edit. Both hold here.
    return code.startswith("[concept")


@dataclass
class TargetRules:
    """What an administration does to invoices it receives, off unless a test switches it on.

    ``vat``: HostFact's default tax rules (config.php::btwcheck with installation.sql's rules): a line for a
    debtor in another EU country with a company name and VAT number, or outside the EU, gets 0 % VAT, unless
    the debtor's Taxable is "yes" (the line's own rate) or "no" (0 %).
    ``discount``: a discount rule for every debtor (discount::check): an invoice's Discount is raised to this
    percentage unless its IgnoreDiscount is "yes".
    ``direct_debit``: a sent or partly paid invoice whose Authorisation is "yes" goes into the next SEPA batch
    (invoice::addInvoiceToSDDBatch); ``Store.sdd_batch`` holds their Identifiers.
    """

    vat: bool = False
    discount: Decimal | None = None
    direct_debit: bool = False


# Country codes of the EU, for the VAT rule.
EU_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)


@dataclass
class Store:
    """Records keyed by Identifier, the highest number used per sequence, and a replaceable clock."""

    dialect: Dialect
    clock: Callable[[], datetime] = datetime.now
    invoices: dict[int, Record] = field(default_factory=dict)
    creditinvoices: dict[int, Record] = field(default_factory=dict)
    debtors: dict[int, Record] = field(default_factory=dict)
    creditors: dict[int, Record] = field(default_factory=dict)
    # Invoices whose creating transaction is still open while their hooks run (see Outcome.uncommitted).
    hidden: set[int] = field(default_factory=set)
    rules: TargetRules = field(default_factory=TargetRules)
    # Invoices put in the direct-debit batch (rules.direct_debit).
    sdd_batch: set[int] = field(default_factory=set)
    # Subscriptions (HostFact_PeriodicElements) made by invoice lines with PeriodicType "period": the
    # administration bills each again when its next period starts.
    subscriptions: dict[int, Record] = field(default_factory=dict)
    # HostFact's CREDIT_TEXT setting: a line at price 0 on every credit invoice (installation.sql's default);
    # "" for none.
    credit_text: str = "Corresponderende factuur: [invoice->InvoiceCode]"
    _last_id: dict[str, int] = field(default_factory=dict)
    _highest: dict[Sequence, int] = field(default_factory=dict)

    def reset(self) -> None:
        for table in (self.invoices, self.creditinvoices, self.debtors, self.creditors):
            table.clear()
        self.hidden.clear()
        self.sdd_batch.clear()
        self.subscriptions.clear()
        self._last_id.clear()
        self._highest.clear()

    def table(self, name: Table) -> dict[int, Record]:
        tables: dict[Table, dict[int, Record]] = {
            "invoices": self.invoices,
            "creditinvoices": self.creditinvoices,
            "debtors": self.debtors,
            "creditors": self.creditors,
        }
        return tables[name]

    def new_id(self, name: str) -> int:
        """The next auto-increment id of a table (or of "invoicelines" / "creditinvoicelines")."""
        self._last_id[name] = self._last_id.get(name, 0) + 1
        return self._last_id[name]

    # -- numbering -------------------------------------------------------------------------------------------

    def next_code(self, sequence: Sequence) -> str:
        """The number the sequence hands out next: one above the highest number it has seen."""
        return f"{_PREFIXES[sequence]}{self._highest.get(sequence, 0) + 1:0{_WIDTH}d}"

    def note_code(self, sequence: Sequence, code: str) -> None:
        """Remember a stored code so the sequence continues above it (F0100 added by hand → next F0101)."""
        match = re.fullmatch(re.escape(_PREFIXES[sequence]) + r"(\d+)", code)
        if match:
            self._highest[sequence] = max(self._highest.get(sequence, 0), int(match.group(1)))

    # -- lookups ---------------------------------------------------------------------------------------------

    def find(self, name: Table, field_name: str, value: str) -> Record | None:
        """The record whose field equals ``value`` exactly (HostFact's show is an exact match)."""
        for record in self.table(name).values():
            if record.get(field_name) == value:
                return record
        return None

    def code_free(self, name: Table, field_name: str, code: str, *, own_id: int | None = None) -> bool:
        found = self.find(name, field_name, code)
        return found is None or found["Identifier"] == own_id

    # -- time ------------------------------------------------------------------------------------------------

    def today(self) -> str:
        return self.clock().date().isoformat()

    def now(self) -> str:
        return self.clock().strftime("%Y-%m-%d %H:%M:%S")


def add_days(day: str, days: int) -> str:
    """``day`` + ``days`` as YYYY-MM-DD, or "" when ``day`` is not a date."""
    try:
        return (date.fromisoformat(day[:10]) + timedelta(days=days)).isoformat()
    except ValueError:
        return ""
