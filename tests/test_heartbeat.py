"""Worker heartbeats: a running worker is listed with a fresh beat; a stopped one is gone."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.stack import LINES, running_stack
from worker.heartbeat import SYNCS_FAILED, SyncTally, beat, heartbeats
from worker.runtime import start


async def test_a_running_worker_beats_and_a_stopped_one_is_gone(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url)
    first = await start(settings, redis_url)
    second = await start(settings, redis_url)
    try:
        await asyncio.sleep(0.2)
        beats = await heartbeats(redis)
        assert {b.worker_id for b in beats} == {first.worker_id, second.worker_id}
        assert all(b.fresh and b.pid > 0 for b in beats)
    finally:
        await first.stop()
    assert [b.worker_id for b in await heartbeats(redis)] == [second.worker_id]
    await second.stop()
    assert await heartbeats(redis) == []


async def test_the_failed_column_counts_failed_syncs_not_only_jobs_that_raised(redis: Redis) -> None:
    """A failed sync is handled (arq counts its job as complete): the heartbeat adds the worker's count."""
    worker = SimpleNamespace(
        jobs_complete=5, jobs_failed=1, jobs_retried=0, tasks={}, ctx={SYNCS_FAILED: SyncTally(3)}
    )
    await beat(redis, "host:1:abc", worker, time.time(), every=2.0)  # type: ignore[arg-type]
    (heartbeat,) = await heartbeats(redis)
    assert (heartbeat.jobs_complete, heartbeat.jobs_failed) == (5, 4)


async def test_a_failed_sync_shows_in_its_workers_failed_column(redis: Redis, redis_url: str) -> None:
    """Counted by the real worker: arq gives each job a copy of the worker's context (issue 11, point 9)."""
    retry = {"max_tries": 2, "base_delay": 0.01, "max_delay": 0.05, "max_span": 60}
    async with running_stack(redis_url, retry=retry) as stack:
        stack.hostfact.add_debtor(CompanyName="Company X")
        stack.target.faults.inject("http_503", times=50)
        await stack.call("invoice", "add", DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
        assert [e.status for e in await stack.settled()] == ["failed"]
        deadline = time.monotonic() + 10
        while (failed := [b.jobs_failed for b in await heartbeats(redis)]) != [1]:
            assert time.monotonic() < deadline, f"the FAILED column says {failed}"
            await asyncio.sleep(0.1)


async def test_a_worker_stopped_at_any_moment_of_its_start_up_stops(redis: Redis, redis_url: str) -> None:
    """Stopped a few steps of the event loop after it started (still greeting Redis, or already polling),
    a worker stops, and takes its heartbeat with it. On Python 3.11 redis-py can lose the cancellation
    that ends arq's poll loop; the worker waited for that loop forever (worker.aio cancels it again)."""
    settings = make_settings(redis_url, shutdown_grace=0)
    for steps in range(0, 30, 3):
        running = await start(settings, redis_url)
        for _ in range(steps):
            await asyncio.sleep(0)
        stopping = asyncio.create_task(running.stop())
        finished, _ = await asyncio.wait({stopping}, timeout=15)
        assert finished, f"the worker stopped {steps} loop steps after it started did not stop within 15 s"
        await stopping
        assert await heartbeats(redis) == [], f"a heartbeat outlived the worker stopped after {steps} steps"
