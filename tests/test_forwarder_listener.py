"""hooks.php under php-cli against the real listener: every seed hook, and the spool while it is down."""

from __future__ import annotations

import shutil
from pathlib import Path

from redis.asyncio import Redis

from tests.conftest import HOOK_SECRET, SEED_HOOKS, Listener
from tests.test_forwarder import Forwarder, closed_port_url
from worker import keys


async def test_every_seed_hook_fired_by_hooks_php_is_accepted_and_queued(
    listener: Listener, redis: Redis, tmp_path: Path
) -> None:
    forwarder = Forwarder(url=f"{listener.url}/hooks/hostfact", secret=HOOK_SECRET, spool=tmp_path / "spool")

    await forwarder.fire(*SEED_HOOKS.items())

    assert forwarder.spooled() == [], "the listener took every hook: nothing may wait in the spool"
    events = [await listener.store.get(event_id) for event_id in await listener.store.ids(newest_first=False)]
    assert [e.action for e in events if e] == list(SEED_HOOKS)
    for event in events:
        assert event is not None and event.status == "queued"
        assert event.payload["id"] == 2 and event.payload["InvoiceCode"] == "F0001"
    partly = next(e for e in events if e and e.action == "invoice_is_partly_paid")
    assert partly.payload["AmountPaidNow"] == "5.25" and partly.payload["AmountOpen"] == "194.40"
    assert await redis.zcard(keys.QUEUE) == len(SEED_HOOKS)


async def test_hooks_spooled_while_the_listener_is_down_are_resent_once_in_order(
    listener: Listener, redis: Redis, tmp_path: Path
) -> None:
    down = Forwarder(url=closed_port_url(), secret=HOOK_SECRET, spool=tmp_path / "spool")
    order = ["invoice_is_created", "invoice_is_sent", "invoice_is_partly_paid", "invoice_is_paid"]
    for action in order:
        await down.fire((action, SEED_HOOKS[action]))
    spooled = down.spooled()
    assert [record["action"] for record in spooled] == order
    assert await listener.store.count() == 0

    # A copy of the spool, to deliver everything a second time afterwards.
    shutil.copytree(down.spool, tmp_path / "again")
    up = Forwarder(url=f"{listener.url}/hooks/hostfact", secret=HOOK_SECRET, spool=tmp_path / "spool")
    run = await up.resend()
    assert run.returncode == 0, run
    assert up.spooled() == []

    events = [await listener.store.get(event_id) for event_id in await listener.store.ids(newest_first=False)]
    assert [e.action for e in events if e] == order
    assert [e.webhook_id for e in events if e] == [record["id"] for record in spooled]

    # Delivered again (a resend that ran twice, say): the listener knows every webhook-id; nothing doubles.
    twice = Forwarder(url=f"{listener.url}/hooks/hostfact", secret=HOOK_SECRET, spool=tmp_path / "again")
    assert (await twice.resend()).returncode == 0
    assert twice.spooled() == []
    assert await listener.store.count() == len(order)
    assert await redis.zcard(keys.QUEUE) == len(order)
