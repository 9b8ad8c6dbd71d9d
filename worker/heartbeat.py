"""Worker heartbeats: each worker process says every few seconds that it is alive and what it has done.

`factsync status` lists them and `factsync check` fails when none is fresh (container health checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio import Redis

from worker import keys
from worker.redisio import done, text

if TYPE_CHECKING:  # arq's worker module costs a health check 0.1 s to import
    from arq.worker import Worker

log = structlog.get_logger(__name__)
# A beat written before workers said how often they beat: the default heartbeat_seconds.
DEFAULT_EVERY = 2.0

# The worker context's `SyncTally` (worker.jobs counts into it): arq counts only jobs that raised, and a
# failed sync is handled.
SYNCS_FAILED = "syncs_failed"


@dataclass
class SyncTally:
    """Syncs a worker process saw fail. An object, not a number in the context: arq hands each job a copy
    of the worker's context, so a number a job adds to is gone with the job."""

    failed: int = 0


# A worker silent for this many of its beats is gone (or stuck): `check` fails on it, and a live worker
# hands its jobs on (worker.handover).
DEAD_AFTER_BEATS = 5


def stale_after(every: float) -> float:
    """Seconds without a beat after which a worker beating ``every`` seconds counts as dead."""
    return DEAD_AFTER_BEATS * every


@dataclass(frozen=True)
class Heartbeat:
    worker_id: str
    host: str
    pid: int
    started_at: float
    beat_at: float
    jobs_complete: int
    jobs_failed: int
    jobs_retried: int
    jobs_running: int
    every: float

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.beat_at)

    @property
    def stale_after(self) -> float:
        return stale_after(self.every)

    @property
    def fresh(self) -> bool:
        return self.age <= self.stale_after


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


async def beat(redis: Redis, worker_id: str, worker: Worker, started_at: float, *, every: float) -> None:
    fields: dict[str, Any] = {
        "every": every,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": f"{started_at:.3f}",
        "beat_at": f"{time.time():.3f}",
        "jobs_complete": worker.jobs_complete,
        "jobs_failed": worker.jobs_failed + worker.ctx.get(SYNCS_FAILED, SyncTally()).failed,
        "jobs_retried": worker.jobs_retried,
        "jobs_running": len(worker.tasks),
    }
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.worker(worker_id), mapping=fields)
        # Outlives the death verdict, so a live worker still finds the dead one's beat to judge it by.
        pipe.expire(keys.worker(worker_id), max(60, int(stale_after(every) * 4)))
        pipe.sadd(keys.WORKERS, worker_id)
        await pipe.execute()


async def keep_beating(
    redis: Redis,
    worker_id: str,
    worker: Worker,
    *,
    every: float,
    after_beat: Callable[[], Awaitable[object]] | None = None,
    stop_when: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Beat every ``every`` seconds until cancelled, then take the heartbeat down: a stopped worker is not
    a dead one. ``after_beat`` runs after each beat (the hand-over of dead workers' jobs); the loop ends
    when ``stop_when`` says so before a beat (this worker's own jobs were handed on)."""
    started_at = time.time()
    try:
        while True:
            with contextlib.suppress(Exception):  # Redis away for a moment: ask again next time
                if stop_when is not None and await stop_when():
                    log.error("worker.judged_dead", worker_id=worker_id)
                    return
            with contextlib.suppress(Exception):  # Redis away for a moment: beat again next time
                await beat(redis, worker_id, worker, started_at, every=every)
            if after_beat is not None:
                try:
                    await after_beat()
                except Exception:  # Redis away, or a hand-over cut short: the next beat tries again
                    log.warning("heartbeat.after_beat_failed", exc_info=True)
            await asyncio.sleep(every)
    finally:
        with contextlib.suppress(Exception):
            await done(redis.delete(keys.worker(worker_id)))
            await done(redis.srem(keys.WORKERS, worker_id))


async def heartbeats(redis: Redis) -> list[Heartbeat]:
    """Every worker that beat recently enough to still have a heartbeat, freshest first."""
    found: list[Heartbeat] = []
    for raw_id in await done(redis.smembers(keys.WORKERS)):
        worker_id = text(raw_id)
        raw = await done(redis.hgetall(keys.worker(worker_id)))
        if not raw:
            continue  # long dead: the hand-over forgets it once what it held is handed on
        data = {text(k): text(v) for k, v in raw.items()}
        found.append(
            Heartbeat(
                worker_id=worker_id,
                host=data.get("host", ""),
                pid=int(data.get("pid", 0)),
                started_at=float(data.get("started_at", 0)),
                beat_at=float(data.get("beat_at", 0)),
                jobs_complete=int(data.get("jobs_complete", 0)),
                jobs_failed=int(data.get("jobs_failed", 0)),
                jobs_retried=int(data.get("jobs_retried", 0)),
                jobs_running=int(data.get("jobs_running", 0)),
                every=float(data.get("every", DEFAULT_EVERY)),
            )
        )
    return sorted(found, key=lambda hb: hb.beat_at, reverse=True)


def verdict(beats: list[Heartbeat], *, host: str | None = None) -> tuple[bool, str]:
    """Healthy when a worker (on ``host``, when given) has a fresh heartbeat; and one line saying why."""
    where = f" on {host}" if host is not None else ""
    mine = [beat for beat in beats if host is None or beat.host == host]
    fresh = [beat for beat in mine if beat.fresh]
    if fresh:
        return True, f"{len(fresh)} worker(s){where} with a fresh heartbeat, newest {fresh[0].age:.0f} s old"
    if mine:
        newest = max(mine, key=lambda beat: beat.beat_at)
        return False, f"no fresh worker heartbeat{where}: the newest is {newest.age:.0f} s old"
    return False, f"no worker heartbeat{where}"
