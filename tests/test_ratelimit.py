"""The shared API budget against a real Redis: one limit across limiters (workers), pauses after a ban."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from tasks.client import RateLimit
from tasks.errors import RateLimited
from worker import keys
from worker.ratelimit import Limit, SharedRateLimit, bulk_calls, publish_limits, published_limits
from worker.redisio import done


async def test_two_workers_share_one_budget(redis: Redis) -> None:
    # 600 calls a minute: one every 100 ms, no burst. Two limiters stand for two worker processes.
    first = SharedRateLimit(redis, {"wefact": 600}, burst=1, max_wait=10)
    second = SharedRateLimit(redis, {"wefact": 600}, burst=1, max_wait=10)
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire("wefact") for limiter in (first, second) * 3))
    elapsed = time.monotonic() - started
    # Six calls spaced 100 ms apart cannot all pass in under 500 ms, however fast the machine.
    assert elapsed >= 0.45


async def test_a_burst_passes_at_once_then_the_budget_is_spent(redis: Redis) -> None:
    limiter = SharedRateLimit(redis, {"wefact": 60}, burst=3, max_wait=0.1)
    for _ in range(3):
        await limiter.acquire("wefact")
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire("wefact")
    assert 0 < caught.value.retry_after <= 1.0


async def test_administrations_have_separate_budgets(redis: Redis) -> None:
    limiter = SharedRateLimit(redis, {"wefact": 60, "other": 60}, burst=1, max_wait=0.1)
    await limiter.acquire("wefact")
    await limiter.acquire("other")
    with pytest.raises(RateLimited):
        await limiter.acquire("wefact")


async def test_a_ban_pauses_every_worker(redis: Redis) -> None:
    banned_by = SharedRateLimit(redis, {"wefact": 600})
    other_worker = SharedRateLimit(redis, {"wefact": 600})
    await banned_by.pause("wefact", 30)
    with pytest.raises(RateLimited, match="paused") as caught:
        await other_worker.acquire("wefact")
    assert 25 < caught.value.retry_after <= 30
    assert 25 < await other_worker.paused_for("wefact") <= 30


async def test_the_servers_own_count_slows_down_before_a_ban(redis: Redis) -> None:
    limiter = SharedRateLimit(redis, {"wefact": 600}, max_wait=0.1, reserve=2)
    limiter.observe("wefact", RateLimit(remaining_minute=1, reset_minute=time.time() + 20))
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire("wefact")
    assert 15 < caught.value.retry_after <= 20
    limiter.observe("wefact", RateLimit(remaining_minute=100, reset_minute=time.time() + 20))
    await limiter.acquire("wefact")


async def test_bulk_calls_leave_the_burst_to_the_hooks_syncs(redis: Redis) -> None:
    # One call a second, a burst of 5. A backfill (bulk) and a hook's sync (live) share it.
    backfill = SharedRateLimit(redis, {"wefact": 60}, burst=5, max_wait=0.2, bulk_max_wait=0.2)
    hook = SharedRateLimit(redis, {"wefact": 60}, burst=5, max_wait=0.2)
    async with bulk_calls():
        await backfill.acquire("wefact")
        # The bulk run has had its slot; it may not dig into the burst for the next one.
        with pytest.raises(RateLimited):
            await backfill.acquire("wefact")
    # A hook's sync arriving now goes at once, four calls of it, and the budget still holds after them.
    started = time.monotonic()
    for _ in range(4):
        await hook.acquire("wefact")
    assert time.monotonic() - started < 0.2
    with pytest.raises(RateLimited):
        await hook.acquire("wefact")


async def test_the_bulk_mark_holds_for_its_task_and_the_tasks_it_starts_only(redis: Redis) -> None:
    limiter = SharedRateLimit(redis, {"a": 60, "b": 60}, burst=3, max_wait=0.1, bulk_max_wait=0.1)

    async def twice(name: str) -> bool:
        await limiter.acquire(name)
        try:
            await limiter.acquire(name)
        except RateLimited:
            return False
        return True

    async def bulk_job() -> bool:
        async with bulk_calls():
            (second_went,) = await asyncio.gather(twice("a"))
            return second_went

    bulk_second, live_second = await asyncio.gather(bulk_job(), twice("b"))
    assert (bulk_second, live_second) == (False, True)


async def test_a_bulk_call_waits_longer_for_its_slot_than_a_live_one(redis: Redis) -> None:
    limiter = SharedRateLimit(redis, {"wefact": 120}, burst=1, max_wait=0.1, bulk_max_wait=2)
    await limiter.acquire("wefact")
    with pytest.raises(RateLimited):
        await limiter.acquire("wefact")  # a hook's sync gives the job back to the retry loop
    async with bulk_calls():
        await limiter.acquire("wefact")  # a backfill's waits the half second


async def test_the_newest_workers_published_limits_replace_the_last(redis: Redis) -> None:
    """What `status` and the dashboard show: an administration a restarted worker no longer has goes."""
    assert await published_limits(redis) == {}
    await publish_limits(redis, {"hostfact": Limit("source", 300), "old": Limit("target", 150)})
    await publish_limits(redis, {"hostfact": Limit("source", 300), "wefact": Limit("target", 120)})
    assert await published_limits(redis) == {"hostfact": Limit("source", 300), "wefact": Limit("target", 120)}
    # Written by hand or by another version: left out, never a crash of `status`.
    await done(redis.hset(keys.LIMITS, mapping={"a": "not json", "b": '{"role": "boss", "per_minute": 5}'}))
    await done(redis.hset(keys.LIMITS, mapping={"c": '{"role": "target", "per_minute": "x"}'}))
    assert set(await published_limits(redis)) == {"hostfact", "wefact"}
    await publish_limits(redis, {})
    assert await published_limits(redis) == {}
