"""The hand-over of a dead worker's jobs (worker.handover), against a real Redis.

A dead worker's state is made by the code that makes it in production (the scheduling, claim and heartbeat
scripts, arq's key names), then aged; the slow-but-alive worker and the worker judged dead are real
workers in this process, syncing through the simulator. The process-level case (a worker SIGKILLed
mid-sync, a fresh one taking over) is tests/test_kill.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.stack import LINES, running_stack
from worker import keys
from worker.documents import Documents
from worker.handover import dead_workers, hand_over, hand_over_dead, track_job
from worker.heartbeat import Heartbeat, beat, heartbeats
from worker.queue import now_ms
from worker.redisio import done, text
from worker.runtime import serve

DEAD, LIVE = "host-a:11:dead01", "host-b:22:live01"
EVERY = 0.5
# arq's in-progress keys live the longest function timeout + 10 s.
IN_PROGRESS_MS = 130_000
VERDICT: dict[str, Any] = {"in_progress_ms": IN_PROGRESS_MS}


def _documents(redis: Redis, owner: str) -> Documents:
    return Documents(redis, lease_ms=60_000, job_expiry_ms=3_600_000, owner=owner)


async def _beat(redis: Redis, worker_id: str, *, ago: float) -> None:
    worker = SimpleNamespace(jobs_complete=0, jobs_failed=0, jobs_retried=0, tasks={}, ctx={})
    await beat(redis, worker_id, worker, time.time() - 60, every=EVERY)  # type: ignore[arg-type]
    await done(redis.hset(keys.worker(worker_id), "beat_at", f"{time.time() - ago:.3f}"))


async def _start_job(
    redis: Redis, worker_id: str, job_id: str, *, ago: float = 10 * EVERY, noted: bool = True
) -> None:
    """What arq does as a worker starts a job ``ago`` seconds ago (its in-progress key), and what factsync's
    on_job_start adds (unless the worker died in between: ``noted=False``)."""
    await redis.set(keys.in_progress(job_id), b"1", px=IN_PROGRESS_MS - int(ago * 1000))
    if noted:
        await track_job({"redis": redis, "worker_id": worker_id, "job_id": job_id})


@dataclass
class DeadWorkersState:
    sync_job: str
    fan_out_job: str
    watch_job: str


async def _a_worker_died_mid_sync(redis: Redis) -> DeadWorkersState:
    """DEAD started a sync of sales/7 and holds its lease; an event arrived meanwhile, and LIVE's job for it
    stood down, leaving a job queued for when DEAD's lease would run out (a minute on). DEAD also started
    a fan-out. Then DEAD stopped beating, 10 beats ago; LIVE beats."""
    dead_docs, live_docs = _documents(redis, DEAD), _documents(redis, LIVE)
    sync_job = await dead_docs.schedule("sales", "7", "e1")
    assert sync_job
    await _start_job(redis, DEAD, sync_job)
    claim = await dead_docs.claim("sales", "7", sync_job)
    assert claim is not None and claim.event_ids == ["e1"]
    second = await live_docs.schedule("sales", "7", "e2")
    assert second
    assert await live_docs.claim("sales", "7", second) is None  # stands down: DEAD holds the lease
    watch_job = text(await redis.get(keys.scheduled("sales", "7")))
    assert await redis.zscore(keys.QUEUE, watch_job) > now_ms() + 50_000
    fan_out_job = "fanout:e3:0"
    await _start_job(redis, DEAD, fan_out_job)
    await _beat(redis, DEAD, ago=10 * EVERY)
    await _beat(redis, LIVE, ago=0)
    return DeadWorkersState(sync_job, fan_out_job, watch_job)


def test_the_arq_key_prefixes_factsync_spells_out_are_arqs() -> None:
    assert (keys.ARQ_JOB_PREFIX, keys.ARQ_IN_PROGRESS_PREFIX) == (job_key_prefix, in_progress_key_prefix)


async def test_a_dead_workers_jobs_and_leases_are_freed_and_its_document_synced_at_once(redis: Redis) -> None:
    state = await _a_worker_died_mid_sync(redis)
    assert await dead_workers(redis) == [DEAD]

    assert await hand_over_dead(redis, LIVE, **VERDICT) == {DEAD: 2}

    # arq may run both jobs again (they are still in the queue, started at a time long past) ...
    for job in (state.sync_job, state.fan_out_job):
        assert not await redis.exists(keys.in_progress(job)), job
    assert await redis.zscore(keys.QUEUE, state.sync_job) <= now_ms()
    # ... the dead worker's lease is gone, and the job that waited for it runs now, not in a minute.
    assert not await redis.exists(keys.lock("sales", "7"))
    assert await redis.zscore(keys.QUEUE, state.watch_job) <= now_ms()
    # Whichever runs first takes the lease with both events: nothing was lost.
    claim = await _documents(redis, LIVE).claim("sales", "7", state.watch_job)
    assert claim is not None and claim.event_ids == ["e1", "e2"]
    # The dead worker is forgotten; the live one is untouched.
    assert not await redis.exists(keys.worker_jobs(DEAD), keys.worker(DEAD))
    assert [b.worker_id for b in await heartbeats(redis)] == [LIVE]
    assert await dead_workers(redis) == []


async def test_a_lease_the_dead_worker_no_longer_holds_is_left_alone(redis: Redis) -> None:
    """The dead worker's lease had run out and another worker took the document: the hand-over frees the
    job, never the other worker's lease."""
    state = await _a_worker_died_mid_sync(redis)
    await redis.delete(keys.lock("sales", "7"))
    other = await _documents(redis, "host-c:33:other1").claim("sales", "7", state.watch_job)
    assert other is not None

    assert await hand_over_dead(redis, LIVE, **VERDICT) == {DEAD: 2}

    assert text(await redis.get(keys.lock("sales", "7"))) == other.token
    assert not await redis.exists(keys.in_progress(state.sync_job))


async def test_a_job_the_dead_worker_started_but_had_not_noted_is_freed_too(redis: Redis) -> None:
    """arq marks a job in progress before on_job_start notes it (under load, a second or two): a worker
    killed in between leaves a job only its in-progress key knows. The hand-over frees such a job, started
    even after the dead worker's last beat, and never a live worker's: neither one it noted long ago nor
    one it started just now."""
    await _a_worker_died_mid_sync(redis)
    await _start_job(redis, DEAD, "fanout:e4:0", ago=9 * EVERY, noted=False)
    await _start_job(redis, LIVE, "fanout:e5:0", ago=60)
    await _start_job(redis, LIVE, "fanout:e6:0", ago=0.1, noted=False)

    assert await hand_over_dead(redis, LIVE, **VERDICT) == {DEAD: 3}

    assert not await redis.exists(keys.in_progress("fanout:e4:0"))
    assert await redis.exists(keys.in_progress("fanout:e5:0"))
    assert await redis.exists(keys.in_progress("fanout:e6:0"))


async def test_two_workers_noticing_the_same_death_hand_it_over_once(redis: Redis) -> None:
    """Five live workers judge the same worker dead at the same moment: exactly one frees its jobs. One that
    comes to it late, after a third worker started the job again, must not free that run's key."""
    state = await _a_worker_died_mid_sync(redis)
    live = [f"host-{i}:{i}:live{i:02}" for i in range(5)]

    results = await asyncio.gather(*(hand_over_dead(redis, me, **VERDICT) for me in live))

    assert sorted(results, key=len) == [{}, {}, {}, {}, {DEAD: 2}]
    winner = live[next(i for i, r in enumerate(results) if r)]
    assert text(await redis.get(keys.handover(DEAD))) == winner
    # arq on another worker starts the sync job again; a latecomer that read DEAD as dead a moment ago:
    await redis.set(keys.in_progress(state.sync_job), b"1", px=IN_PROGRESS_MS)
    assert await hand_over(redis, DEAD, "host-9:9:late09", **VERDICT) is None
    assert await redis.exists(keys.in_progress(state.sync_job))


async def test_a_slow_live_worker_keeps_its_documents(redis: Redis, redis_url: str) -> None:
    """A sync that waits on the target far longer than the death verdict (five beats of 0.2 s) is not a dead
    worker's: its beats and lease renewals go on, nothing is handed over, the sync runs once and is done."""
    async with running_stack(redis_url, workers=2, heartbeat_seconds=0.2) as stack:
        redis = Redis.from_url(redis_url)
        try:
            debtor = (await stack.source.call("debtor", "add", {"CompanyName": "Slow BV"}))["debtor"]
            stack.target.faults.inject("latency", controller="invoice", action="add", seconds=3, times=1)
            params = {"DebtorCode": debtor["DebtorCode"], "InvoiceLines": LINES, "Status": 2}
            await stack.source.call("invoice", "add", params)
            (event,) = await stack.settled(within=20)
            handed = [key async for key in redis.scan_iter(match=keys.handover("*"))]
        finally:
            await redis.aclose()
    assert event.status == "done", (event.status, event.reason)
    assert event.tries == 1
    assert handed == []
    assert [c.action for c in stack.target.calls if c.controller == "invoice" and c.action == "add"] == [
        "add"
    ]


async def test_a_worker_judged_dead_stops_so_its_supervisor_starts_a_fresh_one(
    redis: Redis, redis_url: str
) -> None:
    """A worker that was frozen past the verdict finds its jobs handed on: it stops, rather than working on
    beside the worker that took over, and `serve` says so (its process exits with an error, and systemd's
    Restart=on-failure or the supervisor starts a fresh one)."""
    serving = asyncio.create_task(serve(make_settings(redis_url, heartbeat_seconds=0.1), redis_url))
    try:
        deadline = time.monotonic() + 10
        beats: list[Heartbeat] = []
        while not beats and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            beats = await heartbeats(redis)
        (worker,) = beats
        await redis.set(keys.handover(worker.worker_id), "someone-else")
        assert await asyncio.wait_for(serving, timeout=10) is False
        assert await heartbeats(redis) == []
    finally:
        serving.cancel()


@pytest.mark.parametrize("taken", ["handed on", "expired"])
async def test_a_sync_whose_lease_is_lost_is_cancelled(redis: Redis, taken: str) -> None:
    """Only one writer per document: when a running sync's lease is gone (handed on, or run out) its body
    is cancelled at the next renewal, so its job runs again and stands down behind the new holder."""
    documents = Documents(redis, lease_ms=60_000, job_expiry_ms=3_600_000, owner=LIVE, renew_every=0.1)
    await documents.schedule("sales", "8", "e1")
    claim = await documents.claim("sales", "8", "job-1")
    assert claim is not None
    wrote = []

    async def sync() -> None:
        async with documents.kept_alive(claim):
            await redis.delete(keys.lock("sales", "8"))
            if taken == "handed on":
                await redis.set(keys.lock("sales", "8"), "host-c:33:other1/abc")
            await asyncio.sleep(2)
            wrote.append("a write after the lease was lost")

    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(sync())
    assert time.monotonic() - started < 1
    assert wrote == []
