"""Hand-over: when a worker stops beating, one live worker frees what it held, so its documents sync again
within seconds, not after arq's in-progress keys (job timeout + 10 s) and the document leases run out.

Each worker notes the arq jobs it starts (`track_job`) and forgets each once arq has finished it
(`untrack_job`). After each of its own beats a worker looks for dead ones: silent for DEAD_AFTER_BEATS of
their beats (`dead_workers`). The first live worker to take a dead one's hand-over key frees every job the
dead one held (`hand_over`), and any job started before it died that no live worker has noted: the job's
in-progress key goes, so arq runs it again (it is still in the
queue), and so do the document leases the dead worker held; a job waiting for such a lease runs now.
A slow worker is not dead: its beats and lease renewals go on while its API calls wait.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from redis.asyncio import Redis

from worker import keys
from worker.heartbeat import DEFAULT_EVERY, stale_after
from worker.queue import now_ms, sync_document_of
from worker.redisio import done, text

log = structlog.get_logger(__name__)

# The hand-over key outlives the hand-over: a live worker that judged the same worker dead a moment ago,
# and comes to it late, must not free jobs that a third worker has started again since.
HANDOVER_KEPT_S = 600

# KEYS: in-progress, [lock, scheduled, queue]   ARGV: the dead worker's lease prefix, now ms
# Frees one job of a dead worker; for a sync job also its document's lease, when the dead worker holds it,
# and wakes the job queued for when that lease would have run out. Returns 1 when a lease was freed.
_FREE = """
redis.call('DEL', KEYS[1])
if #KEYS == 1 then return 0 end
local holder = redis.call('GET', KEYS[2])
if not holder or string.sub(holder, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local queued = redis.call('GET', KEYS[3])
if queued then
  local score = redis.call('ZSCORE', KEYS[4], queued)
  if score and tonumber(score) > tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[4], 'XX', ARGV[2], queued)
  end
end
return 1
"""


def lease_prefix(worker_id: str) -> str:
    """What every lease token of ``worker_id`` starts with (worker.documents makes the tokens)."""
    return f"{worker_id}/"


async def track_job(ctx: dict[str, Any]) -> None:
    """arq's on_job_start: this worker holds the job until arq has finished it."""
    await done(ctx["redis"].sadd(keys.worker_jobs(ctx["worker_id"]), ctx["job_id"]))


async def untrack_job(ctx: dict[str, Any]) -> None:
    """arq's after_job_end: the job is finished, retried later or handed back to the queue."""
    await done(ctx["redis"].srem(keys.worker_jobs(ctx["worker_id"]), ctx["job_id"]))


async def dead_workers(redis: Redis, *, now: float | None = None) -> list[str]:
    """Workers registered as running whose beat is older than their death verdict, or gone."""
    now = time.time() if now is None else now
    dead = []
    for raw_id in await done(redis.smembers(keys.WORKERS)):
        worker_id = text(raw_id)
        beat_at, every = await done(redis.hmget(keys.worker(worker_id), ["beat_at", "every"]))
        if beat_at is None:
            dead.append(worker_id)  # its beat expired long ago: nobody was there to hand it over
            continue
        if now - float(beat_at) > stale_after(float(every) if every is not None else DEFAULT_EVERY):
            dead.append(worker_id)
    return sorted(dead)


async def hand_over(redis: Redis, dead: str, me: str, *, in_progress_ms: int) -> int | None:
    """Free every job the dead worker held, unless another live worker is doing or has done it.

    Returns how many jobs were handed on, or None when the hand-over was another worker's.
    ``in_progress_ms``: how long arq's in-progress keys live (the longest function timeout + 10 s).
    """
    if not await done(redis.set(keys.handover(dead), me, nx=True, ex=HANDOVER_KEPT_S)):
        return None
    beat_at, every = await done(redis.hmget(keys.worker(dead), ["beat_at", "every"]))
    every_s = float(every) if every is not None else DEFAULT_EVERY
    # It died before its next beat was due; with no beat left, anything older than a verdict will do.
    died_by = float(beat_at) + every_s if beat_at is not None else time.time() - stale_after(every_s)
    free = redis.register_script(_FREE)
    jobs = {text(job) for job in await done(redis.smembers(keys.worker_jobs(dead)))}
    jobs |= await _unnoted(redis, dead, in_progress_ms=in_progress_ms, started_before=died_by + 0.5)
    leases = 0
    for job_id in sorted(jobs):
        job_keys = [keys.in_progress(job_id)]
        document = sync_document_of(await done(redis.get(keys.job(job_id))))
        if document is not None:
            route, name = document
            job_keys += [keys.lock(route, name), keys.scheduled(route, name), keys.QUEUE]
        leases += int(await free(keys=job_keys, args=[lease_prefix(dead), now_ms()]))
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.worker_jobs(dead), keys.worker(dead))
        pipe.srem(keys.WORKERS, dead)
        await pipe.execute()
    log.warning("worker.handed_over", dead_worker=dead, jobs=len(jobs), leases=leases)
    return len(jobs)


async def _unnoted(redis: Redis, dead: str, *, in_progress_ms: int, started_before: float) -> set[str]:
    """Jobs started before ``started_before`` (epoch s) that no live worker has noted.

    arq marks a job in progress before factsync's on_job_start notes it, and under load that can take a
    second or two; a worker killed in between leaves a job only its in-progress key knows. A key's start is
    its lifetime less its TTL. A live worker notes its jobs within seconds, and the hand-over comes a whole
    verdict after the dead worker's last beat: a job started before the dead one died and noted by no live
    worker by now was the dead one's.
    """
    live = [text(w) for w in await done(redis.smembers(keys.WORKERS)) if text(w) != dead]
    noted: set[str] = set()
    for worker_id in live:
        noted |= {text(job) for job in await done(redis.smembers(keys.worker_jobs(worker_id)))}
    prefix = keys.in_progress("")
    now = time.time()
    found = set()
    async for raw in redis.scan_iter(match=prefix + "*", count=1000):
        job_id = text(raw)[len(prefix) :]
        if job_id in noted:
            continue
        ttl = await done(redis.pttl(raw))
        if ttl > 0 and now - (in_progress_ms - ttl) / 1000 < started_before:
            found.add(job_id)
    return found


async def hand_over_dead(redis: Redis, me: str, *, in_progress_ms: int) -> dict[str, int]:
    """Hand on the jobs of every dead worker no other live worker took; {dead worker: jobs handed on}."""
    taken = {}
    for dead in await dead_workers(redis):
        if dead == me:
            continue  # judged dead while it could not beat (frozen, cut off): see handed_over()
        count = await hand_over(redis, dead, me, in_progress_ms=in_progress_ms)
        if count is not None:
            taken[dead] = count
    return taken


async def handed_over(redis: Redis, me: str) -> bool:
    """Whether live workers judged this worker dead and handed its jobs on (it was frozen or cut off from
    Redis past the verdict): it should stop, and its supervisor start a fresh one."""
    return bool(await done(redis.exists(keys.handover(me))))
