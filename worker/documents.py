"""One writer per (route, document), and coalescing: the Redis scripts that decide who syncs a document.

- `schedule`: an event joins the document's pending set; a sync job is queued unless one is already
  queued and not started (the document's `scheduled` flag names it).
- `claim`: a starting job takes the document's lease. When another job holds it, this one stands down
  (no job waits on a lock and holds a worker slot) and leaves a job queued for when that lease would
  expire, unless one is queued already: if the holder is alive it wakes that job when it finishes; if
  it died, the job runs once its lease has run out. Either way the events get their run.
- `release`: the holder gives the lease back; a queued job for the document is woken to run now, or,
  when events arrived during the run and none is queued, exactly one follow-up job is queued.
Each is one script, so no interleaving of them can strand an event in the pending set.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis

from worker import keys
from worker.aio import cancelled
from worker.handover import lease_prefix
from worker.queue import SYNC, job_body, now_ms, sync_job_id
from worker.redisio import done, text

log = structlog.get_logger(__name__)

# KEYS: pending, scheduled, job key, queue   ARGV: event id, expiry ms, score, job id, job body
_SCHEDULE = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if not redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[2]) then
  return false
end
redis.call('PSETEX', KEYS[3], ARGV[2], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
return ARGV[4]
"""

# KEYS: lock, scheduled, pending, watch job key, queue
# ARGV: token, lease ms, this job's id, watch job id, watch job body, expiry ms, now ms
# Returns the pending event ids when the lease is taken, false when another job holds it.
_CLAIM = """
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('SMEMBERS', KEYS[3])
end
local ttl = math.max(redis.call('PTTL', KEYS[1]), 0)
if redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[6]) then
  redis.call('PSETEX', KEYS[4], ARGV[6], ARGV[5])
  redis.call('ZADD', KEYS[5], tonumber(ARGV[7]) + ttl + 250, ARGV[4])
end
return false
"""

# KEYS: lock   ARGV: token, lease ms
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lock, pending, scheduled, job key, queue
# ARGV: token, expiry ms, now ms, job id, job body, retrying job id ('' = none), done event ids...
# A job that will retry counts as queued: it takes the `scheduled` flag again, so events that arrive
# during its backoff join its next run instead of starting another job. Returns the job that runs next.
_RELEASE = """
if #ARGV > 6 then redis.call('SREM', KEYS[2], unpack(ARGV, 7)) end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[3], ARGV[6], 'NX', 'PX', ARGV[2])
  return false
end
local queued = redis.call('GET', KEYS[3])
if queued then
  -- The lease is free now: a job waiting for it (or for its time) may run at once.
  redis.call('ZADD', KEYS[5], 'XX', ARGV[3], queued)
  return queued
end
if redis.call('SCARD', KEYS[2]) == 0 then return false end
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[2])
redis.call('PSETEX', KEYS[4], ARGV[2], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[4])
return ARGV[4]
"""


# KEYS: scheduled, queue   ARGV: now ms. The document's next job, when it waits for a later time, runs now.
_RUN_NOW = """
local job = redis.call('GET', KEYS[1])
if not job then return false end
local score = redis.call('ZSCORE', KEYS[2], job)
if not score or tonumber(score) <= tonumber(ARGV[1]) then return false end
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], job)
return job
"""


async def run_now(redis: Redis, route: str, document: str) -> str | None:
    """Move the document's retrying sync (waiting out its backoff) to now; the job id, or None when no
    job of it waits for a later time."""
    job = await done(redis.eval(_RUN_NOW, 2, keys.scheduled(route, document), keys.QUEUE, str(now_ms())))
    return text(job) if job else None


@dataclass
class Claim:
    """The lease on one document and the events this run answers for."""

    route: str
    document: str
    token: str
    event_ids: list[str]


class Documents:
    """``owner``: the worker id every lease token starts with, so a hand-over (worker.handover) can tell
    the leases of a dead worker. ``renew_every``: seconds between lease renewals while a sync runs."""

    def __init__(
        self,
        redis: Redis,
        *,
        lease_ms: int,
        job_expiry_ms: int,
        owner: str = "-",
        renew_every: float | None = None,
    ) -> None:
        self.redis = redis
        self.lease_ms = lease_ms
        self.job_expiry_ms = job_expiry_ms
        self.owner = owner
        self.renew_every = min(lease_ms / 3000, renew_every or lease_ms / 3000)
        self._schedule = redis.register_script(_SCHEDULE)
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def schedule(self, route: str, document: str, event_id: str) -> str | None:
        """Make sure a sync of (route, document) will run after this event; returns a new job's id, if any."""
        job_id, score = sync_job_id(route, document), now_ms()
        result = await self._schedule(
            keys=[
                keys.pending(route, document),
                keys.scheduled(route, document),
                keys.job(job_id),
                keys.QUEUE,
            ],
            args=[event_id, self.job_expiry_ms, score, job_id, job_body(SYNC, (route, document), score)],
        )
        return text(result) if result else None

    async def claim(self, route: str, document: str, job_id: str) -> Claim | None:
        """The lease and this run's events, or None when another job holds the document."""
        token = f"{lease_prefix(self.owner)}{secrets.token_hex(8)}"
        watch_id, now = sync_job_id(route, document), now_ms()
        result = await self._claim(
            keys=[
                keys.lock(route, document),
                keys.scheduled(route, document),
                keys.pending(route, document),
                keys.job(watch_id),
                keys.QUEUE,
            ],
            args=[
                token,
                self.lease_ms,
                job_id,
                watch_id,
                job_body(SYNC, (route, document), now),
                self.job_expiry_ms,
                now,
            ],
        )
        if result is None:
            return None
        return Claim(route, document, token, sorted(text(item) for item in result))

    async def release(self, claim: Claim, done: list[str], *, retrying: str = "") -> str | None:
        """Give the lease back; returns the job that will sync the document next, if one is needed.

        ``retrying``: the id of this job when arq will run it again (after a backoff); it is the next.
        """
        job_id, now = sync_job_id(claim.route, claim.document), now_ms()
        result = await self._release(
            keys=[
                keys.lock(claim.route, claim.document),
                keys.pending(claim.route, claim.document),
                keys.scheduled(claim.route, claim.document),
                keys.job(job_id),
                keys.QUEUE,
            ],
            args=[
                claim.token,
                self.job_expiry_ms,
                now,
                job_id,
                job_body(SYNC, (claim.route, claim.document), now),
                retrying,
                *done,
            ],
        )
        return text(result) if result else None

    @contextlib.asynccontextmanager
    async def kept_alive(self, claim: Claim) -> AsyncIterator[None]:
        """Renew the lease while the body runs, so a slow API call keeps it but a dead worker loses it.

        The body is cancelled (its job runs again, and stands down while another holds the document) when
        the lease is lost: handed on because this worker was judged dead, or expired. Also when two
        renewals in a row cannot reach Redis: by then live workers may be about to judge this one dead,
        and only one writer may act on a document.
        """
        body = asyncio.current_task()

        async def renew() -> None:
            unconfirmed = 0
            while True:
                await asyncio.sleep(self.renew_every)
                try:
                    kept = await self._renew(
                        keys=[keys.lock(claim.route, claim.document)], args=[claim.token, self.lease_ms]
                    )
                    unconfirmed = 0
                except Exception:
                    kept, unconfirmed = 1, unconfirmed + 1
                if not kept or unconfirmed >= 2:
                    lost = "unconfirmed" if unconfirmed else "taken"
                    log.warning("lease.lost", route=claim.route, document=claim.document, lease=lost)
                    if body is not None:
                        body.cancel()
                    return

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            await cancelled(task)
