"""The ports of the sync: a `Ledger` (the target documents of a route) and an `IdMap` (remembered ids).

Adapters implement `Ledger` per controller (`tasks.adapters`); the runtime implements `IdMap` in Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
