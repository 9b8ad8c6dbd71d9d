"""How a call to an administration can fail; the runtime decides from the class whether to retry."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failed API call. ``exchange`` is the last request/response, with secrets already redacted."""

    def __init__(self, message: str, *, exchange: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exchange = exchange or {}


class TransientError(ApiError):
    """Worth retrying later: network, timeout, 5xx, a body that is not the envelope, concurrent calls."""


class PermanentError(ApiError):
    """The API refused this input; retrying the same call cannot succeed."""

    def __init__(
        self, message: str, *, errors: list[str] | None = None, exchange: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, exchange=exchange)
        self.errors = errors or [message]


class BannedError(ApiError):
    """WeFact answered HTTP 403: the caller's IP is in its firewall. Never retry in a loop."""


class RateLimited(TransientError):
    """The shared budget for a target is spent until ``retry_after`` seconds from now."""

    def __init__(self, message: str, *, retry_after: float, exchange: dict[str, Any] | None = None) -> None:
        super().__init__(message, exchange=exchange)
        self.retry_after = retry_after
