"""The ports of the sync: a `Ledger` (the target documents of a route) and an `IdMap` (remembered ids).

Adapters implement `Ledger` per controller (`tasks.adapters`); the runtime implements `IdMap` in Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tasks.invoice import Invoice
from tasks.plan import Step


@dataclass(frozen=True)
class Applied:
    """What a step left behind, as far as the API told: the mirror's new state, a credit invoice made."""

    mirror: Invoice | None = None
    credit: Invoice | None = None
    # The credit note a MirrorCreditNote step made.
    note: Invoice | None = None
    # False when the state above is the adapter's prediction rather than the API's answer.
    fresh: bool = True


@dataclass(frozen=True)
class Listed:
    """A document as a `list` row shows it: its header (no lines), and which of `drift.compare`'s fields the
    row carries, so a header comparison compares only those."""

    invoice: Invoice
    fields: frozenset[str]


class Ledger(Protocol):
    """The documents a route keeps in its target administration."""

    name: str
    paid_keeps_amount: bool

    def represent(self, source: Invoice) -> Invoice:
        """The source as this ledger's documents can hold it: what its mirror must equal."""

    async def read(self, identifier: str) -> Invoice:
        """The document with this id; raises ``PermanentError`` when the target refuses to show it."""

    async def locate(self, known: str | None, marker: str) -> tuple[Invoice | None, Invoice | None]:
        """The mirror (by the remembered id ``known`` while it carries ``marker``, else by the marker), and
        the credit invoice made from it when the marker search found one."""

    async def find(self, marker: str) -> tuple[Invoice | None, Invoice | None]:
        """The mirror carrying ``marker``, and the credit invoice made from it, if any."""

    async def listing(self, prefix: str) -> list[dict[str, Any]]:
        """The list rows of every document whose marker contains ``prefix``, credit invoices included."""

    def listed(self, row: Mapping[str, Any]) -> Listed:
        """A row of `listing` as a header, with the fields it carries."""

    async def marked(self, prefix: str) -> list[tuple[str, str]]:
        """(marker, document id) of every mirror whose marker starts with ``prefix``."""

    async def apply(self, step: Step, source: Invoice, mirror: Invoice | None, marker: str) -> Applied:
        """Make the step's API call(s)."""

    async def settle_credit(self, credit: Invoice, marker: str, source_credit: Invoice | None) -> Invoice:
        """Make a credit invoice the target made carry ``marker`` (and the source credit's number)."""


class IdMap(Protocol):
    """Source id → target id, per kind ("invoice", "debtor", ...); a cache the markers can rebuild."""

    async def get(self, kind: str, source_id: str) -> str | None: ...

    async def put(self, kind: str, source_id: str, target_id: str) -> None: ...

    async def forget(self, kind: str, source_id: str) -> None: ...

    async def add(self, kind: str, source_id: str, member: str) -> None:
        """Remember ``member`` in the set of ``kind`` for ``source_id`` (links one source id has many of)."""

    async def members(self, kind: str, source_id: str) -> set[str]: ...

    async def get_many(self, kind: str, source_ids: list[str]) -> dict[str, str]:
        """The remembered ids of ``kind`` for many source ids at once (those remembered only): what a bulk
        run reads in one go rather than one round trip per invoice."""

    async def members_many(self, kind: str, source_ids: list[str]) -> dict[str, set[str]]:
        """The sets of ``kind`` for many source ids at once (the non-empty ones only)."""
