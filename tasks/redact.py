"""Secrets out of everything factsync shows or keeps: exchanges, logs and the dashboard all redact here.

A value is blanked wherever it appears, and a field named like a secret is blanked whatever it holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

REDACTED: Final = "***"
# Field names whose values never leave the process (compared lowercased).
SECRET_NAMES: Final = frozenset(
    {"api_key", "apikey", "password", "secret", "token", "hook_secret", "hook_secrets", "authorization"}
)


class Redactor:
    """Blanks the given secret values in text, and every field named like a secret in data."""

    def __init__(self, values: Iterable[str], *, min_length: int = 1) -> None:
        # Longest first, so a secret that contains another is blanked whole. A value shorter than
        # ``min_length`` would blank ordinary words (a weak password) and is left to the field names.
        self.values = sorted({v for v in values if v and len(v) >= min_length}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.values:
            value = value.replace(secret, REDACTED)
        return value

    def value(self, value: Any) -> Any:
        """``value`` with the secrets blanked; mappings keep their shape, numbers and None stay as is."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                self.text(str(key)): REDACTED if str(key).lower() in SECRET_NAMES else self.value(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value
