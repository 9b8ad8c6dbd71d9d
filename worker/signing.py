"""Verifies Standard Webhooks signatures (the format `hooks.php` signs with) against a source's secrets."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook


class SignatureError(Exception):
    """The hook is not authentic or not fresh; the message says which and never echoes a secret."""


class HookVerifier:
    """All current secrets of one source: a hook signed with any of them is authentic (rotation)."""

    def __init__(self, secrets: list[str], *, tolerance: int = 300) -> None:
        self._webhooks = [Webhook(secret) for secret in secrets]
        self.tolerance = tolerance

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float | None = None) -> str:
        """Return the webhook-id of an authentic, fresh hook; raise SignatureError otherwise."""
        webhook_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "")
        signature = headers.get("webhook-signature", "")
        missing = [
            name
            for name, value in (
                ("webhook-id", webhook_id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", signature),
            )
            if not value
        ]
        if missing:
            raise SignatureError(f"missing header {', '.join(missing)}")
        if len(webhook_id) > 200:
            raise SignatureError("webhook-id is longer than 200 characters")
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise SignatureError("webhook-timestamp is not a whole number of seconds") from None
        skew = (time.time() if now is None else now) - sent_at
        if abs(skew) > self.tolerance:
            raise SignatureError(f"webhook-timestamp is {abs(skew):.0f} s off, more than {self.tolerance} s")
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise SignatureError("body is not UTF-8, so its signature cannot match") from None
        offered = _offered_signatures(signature)
        moment = datetime.fromtimestamp(sent_at, tz=UTC)
        matched = False
        # Compare against every secret and every offered signature without stopping early, so the time
        # taken does not tell an attacker which secret or which position came close.
        for webhook in self._webhooks:
            expected = base64.b64decode(webhook.sign(webhook_id, moment, text).split(",", 1)[1])
            for candidate in offered:
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise SignatureError("webhook-signature does not match any secret of this source")
        return webhook_id


def _offered_signatures(header: str) -> list[bytes]:
    offered = []
    for part in header.split():
        version, _, value = part.partition(",")
        if version != "v1" or not value:
            continue
        try:
            offered.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return offered
