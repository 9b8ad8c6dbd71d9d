"""The fastest fault drills of bench/drills.py, as tests: each ends with the drill's verdict.

- API faults (5xx, timeouts, HTML pages, lost answers, a 403) on a small workload: target = source, nothing
  lost, nothing booked twice.
- Redis SIGKILLed with appendfsync always: every hook the listener acknowledged is still there after the
  restart.
- A worker SIGKILLed mid-run: a live worker hands its jobs on; target = source, nothing lost or doubled.
- The listener down for a few seconds while HostFact fires hooks through php-cli running hooks.php: they are
  spooled, resend.php delivers them (twice: the second time adds nothing); every hook is exactly one event,
  target = source, nothing booked twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from bench.drills import drill, drill_faults, drill_handover, drill_listener_down
from tests.conftest import hook_body
from worker import keys
from worker.embedded_redis import EmbeddedRedis
from worker.queue import fan_out_job_id
from worker.store import EventStore

pytestmark = pytest.mark.slow


def _args(**values: object) -> argparse.Namespace:
    defaults: dict[str, object] = {"invoices": 25, "users": 4, "workers": 2, "settle": 25.0}
    return argparse.Namespace(**(defaults | values))


async def test_api_faults_drill_ends_with_target_equal_to_source(tmp_path: Path) -> None:
    result = await drill_faults(_args(), tmp_path)
    assert result["PASS"], json.dumps(result, indent=1, default=str)
    assert result["faulted_target_calls"] > 0


async def test_a_worker_sigkilled_mid_run_is_handed_over_and_the_books_end_equal(tmp_path: Path) -> None:
    """Three workers, one SIGKILLed half a second into the run (or as the queue drains) and restarted:
    nothing lost, nothing doubled, and target = source long before arq's in-progress keys (job timeout
    120 s + 10 s) or the leases (60 s) would have let the dead worker's jobs run again: the hand-over (five
    beats of 0.5 s) did."""
    args = _args(
        invoices=40, workers=3, modes="once", heartbeat=0.5, kill_after=0.5, kill_every=1.0, settle=40.0
    )
    result = await drill_handover(args, tmp_path)
    run = result["runs"]["once"]
    assert run["PASS"] and run["sigkills"] == 1, json.dumps(result, indent=1, default=str)
    assert run["tail_s"] is not None, json.dumps(result, indent=1, default=str)


async def test_listener_down_drill_spools_in_php_and_resend_delivers_each_hook_once(tmp_path: Path) -> None:
    args = _args(
        workers=2, down_seconds=3.0, up_seconds=1.5, invoice_rate=2.0, hooks_per_request=4, settle=30.0
    )
    result = await drill_listener_down(args, tmp_path)
    assert result["PASS"], json.dumps(result, indent=1, default=str)
    assert result["spooled_total"] > 0 and result["resent"] == result["spooled_total"]
    assert result["events"] == result["hooks_fired_through_hooks_php"]


async def test_redis_sigkill_with_appendfsync_always_keeps_every_acknowledged_hook(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    from bench.common import HOOK_SECRET

    async with drill(tmp_path, workers=0, appendfsync="always") as d:
        url = d.source.hooks.url
        acknowledged = []
        async with aiohttp.ClientSession() as session:
            for i in range(200):
                body = hook_body("invoice_is_paid", {"id": 1000 + i, "Debtor": 1, "InvoiceCode": f"F{i}"})
                now = datetime.now(tz=UTC)
                webhook_id = f"msg_kill_{i}"
                headers = {
                    "content-type": "application/json",
                    "webhook-id": webhook_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": Webhook(HOOK_SECRET).sign(webhook_id, now, body.decode()),
                }
                async with session.post(url, data=body, headers=headers) as r:
                    if r.status == 202:
                        acknowledged.append((await r.json())["event_id"])
        port, data = d.redis_server.port, d.redis_server.data_dir
        d.redis_server.process.kill()
        d.redis_server.process.wait()
        d.redis_server = EmbeddedRedis(data, port=port, appendfsync="always").start()
        await asyncio.sleep(0.2)
        store = EventStore(d.redis, dedup_ttl=3600, job_expiry_ms=3_600_000)
        missing = [e for e in acknowledged if await store.get(e) is None]
        unqueued = [e for e in acknowledged if not await d.redis.exists(keys.job(fan_out_job_id(e, 0)))]
        assert len(acknowledged) == 200
        assert missing == []
        assert unqueued == []
