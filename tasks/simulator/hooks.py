"""HostFact's hooks over HTTP in factsync's wire format: a signed JSON POST per hook, logged with its outcome.

Body ``{"action": "<hook>", "data": {...}}`` with Standard Webhooks headers (webhook-id, webhook-timestamp,
webhook-signature). Delivery never fails the API call that fired it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import aiohttp
from standardwebhooks import Webhook

from tasks.simulator.envelope import PendingHook

HookMode = Literal["inline", "background"]
DEFAULT_TIMEOUT = 3.0
# The hooks factsync's forwarder registers (deploy/hostfact/hooks.php). HostFact fires more (debtor
# hooks, ...), but only registered ones leave HostFact.
FORWARDED_HOOKS = frozenset(
    {
        "invoice_is_created",
        "invoice_is_edited",
        "invoice_is_sent",
        "invoice_reminder_is_sent",
        "invoice_summation_is_sent",
        "invoice_is_partly_paid",
        "invoice_is_paid",
        "invoice_is_unpaid",
        "invoice_is_credited",
    }
)


@dataclass
class HookDelivery:
    """One fired hook: what was sent, and what the listener answered (None: not delivered)."""

    seq: int
    action: str
    data: dict[str, Any]
    webhook_id: str
    body: str
    timestamp: int | None = None
    http_status: int | None = None
    error: str | None = None
    done: bool = False

    @property
    def delivered(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "action": self.action,
            "data": json.loads(self.body)["data"],
            "webhook_id": self.webhook_id,
            "timestamp": self.timestamp,
            "http_status": self.http_status,
            "error": self.error,
            "done": self.done,
        }


def _json_value(value: object) -> Any:
    # PHP hands hook params over as floats; the forwarder's json_encode prints them as numbers (5.25, 25.0).
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class HookSender:
    """Fires hooks to ``url``, signed with ``secret`` (``whsec_<base64>``; unsigned when None)."""

    def __init__(
        self,
        url: str | None,
        secret: str | None,
        *,
        mode: HookMode = "inline",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        self.mode: HookMode = mode
        self.timeout = timeout
        self.fired: list[HookDelivery] = []
        try:
            self._webhook = Webhook(secret) if secret else None
        except (ValueError, TypeError) as exc:
            raise ValueError("hook_secret must be a Standard Webhooks secret: whsec_<base64>") from exc
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, hooks: list[PendingHook]) -> list[HookDelivery]:
        """Log the hooks a write fired, in order, and build their bodies."""
        deliveries = []
        for action, data in hooks:
            envelope = {"action": action, "data": data}
            body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=_json_value)
            delivery = HookDelivery(len(self.fired) + 1, action, data, f"msg_{uuid.uuid4().hex}", body)
            self.fired.append(delivery)
            deliveries.append(delivery)
        return deliveries

    async def deliver(self, deliveries: list[HookDelivery]) -> None:
        """POST each hook in order; failures are logged on the delivery, never raised."""
        for delivery in deliveries:
            await self._post(delivery)

    def deliver_later(self, deliveries: list[HookDelivery]) -> None:
        task = asyncio.get_running_loop().create_task(self.deliver(deliveries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every hook fired so far has been delivered (or has failed)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def reset(self) -> None:
        self.fired.clear()

    async def _post(self, delivery: HookDelivery) -> None:
        if self.url is None:
            delivery.error, delivery.done = "no hooks_url configured", True
            return
        sent_at = int(time.time())
        delivery.timestamp = sent_at
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(sent_at),
        }
        if self._webhook is not None:
            moment = datetime.fromtimestamp(sent_at, tz=UTC)
            headers["webhook-signature"] = self._webhook.sign(delivery.webhook_id, moment, delivery.body)
        try:
            session = self._client()
            async with session.post(self.url, data=delivery.body.encode(), headers=headers) as response:
                await response.read()
                delivery.http_status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        finally:
            delivery.done = True

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session
