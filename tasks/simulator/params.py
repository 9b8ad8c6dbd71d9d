"""Request parameters read the way HostFact's API reads them: the exact key first, then its lowercase form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Params:
    """The decoded body of one API call (form or JSON), with HostFact's key lookup."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    def get(self, key: str) -> Any:
        """The value under ``key`` or ``key.lower()``; None when absent."""
        if key in self.raw:
            return self.raw[key]
        return self.raw.get(key.lower())

    def has(self, key: str) -> bool:
        return key in self.raw or key.lower() in self.raw

    def text(self, key: str) -> str:
        """A scalar param as text; "" when absent or not a scalar."""
        value = self.get(key)
        if isinstance(value, bool) or value is None or isinstance(value, Mapping | list):
            return ""
        return str(value)

    def rows(self, key: str) -> list[Mapping[str, Any]] | None:
        """An array of objects such as ``InvoiceLines``; [] when absent, None when it is not an array.

        PHP turns ``{"0": {...}}`` and ``[{...}]`` into the same array; a single flat object (as in WeFact's
        invoiceline example) counts as one row.
        """
        value = self.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return [row for row in value if isinstance(row, Mapping)]
        if isinstance(value, Mapping):
            if value and all(str(k).isdigit() for k in value):
                ordered = [value[k] for k in sorted(value, key=lambda k: int(k))]
                return [row for row in ordered if isinstance(row, Mapping)]
            return [value]
        return None
