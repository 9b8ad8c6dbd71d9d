"""One writer per document and coalescing, against a real Redis: the scripts that decide who syncs what."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from worker import keys
from worker.documents import Documents
from worker.queue import job_deserializer
from worker.redisio import done


def documents(redis: Redis, lease_ms: int = 60_000) -> Documents:
    return Documents(redis, lease_ms=lease_ms, job_expiry_ms=3_600_000)


async def queued_jobs(redis: Redis) -> list[str]:
    return [job.decode() for job in await redis.zrange(keys.QUEUE, 0, -1)]


async def test_many_events_for_a_queued_document_make_one_job(redis: Redis) -> None:
    docs = documents(redis)
    created = [await docs.schedule("sales", "12", f"evt_{n}") for n in range(100)]

    assert sum(job is not None for job in created) == 1
    jobs = await queued_jobs(redis)
    assert jobs == [created[0]]
    body = job_deserializer(await redis.get(keys.job(jobs[0])))
    assert (body["f"], body["a"]) == ("sync_document", ["sales", "12"])
    assert await done(redis.scard(keys.pending("sales", "12"))) == 100


async def test_other_documents_and_routes_get_their_own_job(redis: Redis) -> None:
    docs = documents(redis)
    await docs.schedule("sales", "12", "evt_a")
    await docs.schedule("sales", "13", "evt_b")
    await docs.schedule("purchase", "12", "evt_c")
    assert len(await queued_jobs(redis)) == 3


async def test_events_during_a_run_cause_exactly_one_follow_up(redis: Redis) -> None:
    docs = documents(redis)
    first_job = await docs.schedule("sales", "12", "evt_1")
    assert first_job is not None
    await redis.zrem(keys.QUEUE, first_job)  # the worker took it
    claim = await docs.claim("sales", "12", first_job)
    assert claim is not None and claim.event_ids == ["evt_1"]

    # While it runs, 50 more events arrive: one more job is queued, for all of them.
    during = [await docs.schedule("sales", "12", f"evt_d{n}") for n in range(50)]
    second_job = next(job for job in during if job)
    assert sum(job is not None for job in during) == 1

    # That job starts while the first still holds the lease: it stands down and leaves its events.
    assert await docs.claim("sales", "12", second_job) is None
    follow_up = await docs.release(claim, claim.event_ids)
    assert follow_up is not None, "events that came during the run must get one more run"

    again = await docs.claim("sales", "12", follow_up)
    assert again is not None
    assert sorted(again.event_ids) == sorted(f"evt_d{n}" for n in range(50))
    assert await docs.release(again, again.event_ids) is None, "nothing came meanwhile: no further run"
    assert await done(redis.scard(keys.pending("sales", "12"))) == 0


async def test_no_new_job_when_a_queued_job_will_see_the_events(redis: Redis) -> None:
    docs = documents(redis)
    job = await docs.schedule("sales", "12", "evt_1")
    assert job is not None
    claim = await docs.claim("sales", "12", job)
    assert claim is not None
    queued = await docs.schedule("sales", "12", "evt_2")  # queued, not started yet
    assert queued is not None
    # The job already queued is the one that runs next; no other is made.
    assert await docs.release(claim, claim.event_ids) == queued
    assert sorted(await queued_jobs(redis)) == sorted([job, queued])
    later = await docs.claim("sales", "12", queued)
    assert later is not None and later.event_ids == ["evt_2"]


async def test_a_failed_run_keeps_its_events_pending_for_the_retry(redis: Redis) -> None:
    docs = documents(redis)
    job = await docs.schedule("sales", "12", "evt_1")
    assert job is not None
    claim = await docs.claim("sales", "12", job)
    assert claim is not None
    await docs.release(claim, [])  # crashed or retrying: nothing answered
    retry = await docs.claim("sales", "12", job)
    assert retry is not None and retry.event_ids == ["evt_1"]


async def test_a_dead_workers_lease_expires(redis: Redis) -> None:
    docs = documents(redis, lease_ms=200)
    job = await docs.schedule("sales", "12", "evt_1")
    assert job is not None
    assert await docs.claim("sales", "12", job) is not None  # and then the worker dies
    assert await docs.claim("sales", "12", "sync:other") is None
    await asyncio.sleep(0.3)
    assert await docs.claim("sales", "12", "sync:other") is not None


async def test_a_slow_run_keeps_its_lease(redis: Redis) -> None:
    docs = documents(redis, lease_ms=300)
    job = await docs.schedule("sales", "12", "evt_1")
    assert job is not None
    claim = await docs.claim("sales", "12", job)
    assert claim is not None
    async with docs.kept_alive(claim):
        await asyncio.sleep(0.8)
        assert await docs.claim("sales", "12", "sync:other") is None


async def test_a_retrying_job_takes_the_events_that_arrive_during_its_backoff(redis: Redis) -> None:
    docs = documents(redis)
    job = await docs.schedule("sales", "12", "evt_1")
    assert job is not None
    claim = await docs.claim("sales", "12", job)
    assert claim is not None

    # A transient failure: arq will run this job again after a backoff. No follow-up job is made...
    assert await docs.release(claim, [], retrying=job) is None
    # ...and an event during the backoff joins the retry instead of starting another job.
    assert await docs.schedule("sales", "12", "evt_2") is None
    assert await queued_jobs(redis) == [job]

    retry = await docs.claim("sales", "12", job)
    assert retry is not None and retry.event_ids == ["evt_1", "evt_2"]


async def test_events_left_to_a_dead_holder_get_their_run_when_its_lease_runs_out(redis: Redis) -> None:
    docs = documents(redis, lease_ms=400)
    job = await docs.schedule("sales", "12", "evt_1")
    assert job is not None
    await redis.zrem(keys.QUEUE, job)
    assert await docs.claim("sales", "12", job) is not None  # ... and then its worker is killed
    await redis.zrem(keys.QUEUE, job)

    # A new event's job (or the killed job run again by arq) finds the lease held and stands down...
    second = await docs.schedule("sales", "12", "evt_2")
    assert second is not None
    await redis.zrem(keys.QUEUE, second)
    assert await docs.claim("sales", "12", second) is None
    # ...leaving one job due when the dead holder's lease runs out.
    (watch,) = await redis.zrange(keys.QUEUE, 0, -1, withscores=True)
    due_in = watch[1] - time.time() * 1000
    assert 100 < due_in <= 700
    await asyncio.sleep(0.45)
    taken = await docs.claim("sales", "12", watch[0].decode())
    assert taken is not None and taken.event_ids == ["evt_1", "evt_2"]


async def test_a_live_holder_wakes_the_job_waiting_for_its_lease(redis: Redis) -> None:
    docs = documents(redis, lease_ms=60_000)
    job = await docs.schedule("sales", "12", "evt_1")
    assert job is not None
    holder = await docs.claim("sales", "12", job)
    assert holder is not None
    await redis.zrem(keys.QUEUE, job)
    second = await docs.schedule("sales", "12", "evt_2")
    assert second is not None
    await redis.zrem(keys.QUEUE, second)
    assert await docs.claim("sales", "12", second) is None
    (waiting, due) = (await redis.zrange(keys.QUEUE, 0, -1, withscores=True))[0]
    assert due > time.time() * 1000 + 50_000, "due when the holder's lease would run out"

    assert await docs.release(holder, holder.event_ids) == waiting.decode()
    (_, woken) = (await redis.zrange(keys.QUEUE, 0, -1, withscores=True))[0]
    assert woken <= time.time() * 1000, "woken: due now that the lease is free"
