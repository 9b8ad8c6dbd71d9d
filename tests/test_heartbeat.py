"""Worker heartbeats: a running worker is listed with a fresh beat; a stopped one is gone."""

from __future__ import annotations

from redis.asyncio import Redis

from tests.conftest import make_settings
from worker.heartbeat import heartbeats
from worker.runtime import start


async def test_a_running_worker_beats_and_a_stopped_one_is_gone(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url)
    first = await start(settings, redis_url)
    second = await start(settings, redis_url)
    try:
        import asyncio

        await asyncio.sleep(0.2)
        beats = await heartbeats(redis)
        assert {b.worker_id for b in beats} == {first.worker_id, second.worker_id}
        assert all(b.fresh and b.pid > 0 for b in beats)
    finally:
        await first.stop()
    assert [b.worker_id for b in await heartbeats(redis)] == [second.worker_id]
    await second.stop()
    assert await heartbeats(redis) == []
