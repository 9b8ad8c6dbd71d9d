"""The event store: every accepted hook as a record with its status, tries and outcome per route.

Statuses: queued → running → done | ignored | failed, and failed → discarded by an operator. The `failed`
status index is the failed store that operators list and re-enqueue from. Writes that must not be torn
apart (record + enqueue, outcome + status) are single Lua scripts.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker import keys
from worker.queue import FAN_OUT, fan_out_job_id, job_body, now_ms
from worker.redisio import done, text

if TYPE_CHECKING:  # an annotation only: `status` reads events without the (pydantic) settings
    from worker.config import Settings

Status = Literal["queued", "running", "done", "ignored", "failed", "discarded"]
STATUSES: tuple[Status, ...] = ("queued", "running", "done", "ignored", "failed", "discarded")
# Seconds per bucket of the failure counters (keys.failures): the dashboard's activity chart's.
FAILURE_BUCKET = 300
# How many tries an event's timeline keeps (the newest).
TIMELINE_LENGTH = 50
# Discarded: an operator gave up on a failed event; it stays, with who and why in its history, for audit.
FINAL: frozenset[str] = frozenset({"done", "ignored", "failed", "discarded"})
# Events an operator's command records (`worker.resync`), not hooks: they carry their routes and invoice,
# and the fan-out syncs that invoice on those routes again when one is re-enqueued.
BACKFILL = "backfill"
AUDIT = "audit"
SYNTHETIC: frozenset[str] = frozenset({BACKFILL, AUDIT})


def new_event_id() -> str:
    # Time first, so ids sort by arrival; random tail, so two listeners never collide.
    return f"evt_{now_us():013x}{secrets.token_hex(5)}"


def now_us() -> int:
    """Event indexes are scored in microseconds, so hooks accepted within one millisecond keep their order."""
    return time.time_ns() // 1000


@dataclass
class Event:
    id: str
    source: str
    action: str
    payload: dict[str, Any]
    received_at: float
    status: Status
    webhook_id: str = ""
    generation: int = 0
    tries: int = 0
    routes: list[str] = field(default_factory=list)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: str = ""
    last_exchange: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # Fields of the hook that did not parse; the sync did not need them.
    problems: list[str] = field(default_factory=list)
    # A running event whose sync waits for a retry: until when (epoch seconds), and why.
    waiting_until: float | None = None
    waiting_reason: str = ""

    def waiting(self, now: float) -> bool:
        """Queued for a later try (a backoff, a spent budget, a ban pause), not being worked on now."""
        return self.status == "running" and self.waiting_until is not None and self.waiting_until > now

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Event:
        outcomes = {
            name.removeprefix("outcome:"): json.loads(value)
            for name, value in raw.items()
            if name.startswith("outcome:")
        }
        return cls(
            id=raw["id"],
            source=raw["source"],
            action=raw["action"],
            payload=json.loads(raw.get("payload") or "{}"),
            received_at=float(raw["received_at"]),
            status=raw["status"],  # type: ignore[arg-type]
            webhook_id=raw.get("webhook_id", ""),
            generation=int(raw.get("generation", 0)),
            tries=int(raw.get("tries", 0)),
            routes=json.loads(raw.get("routes") or "[]"),
            outcomes=outcomes,
            reason=raw.get("reason", ""),
            last_exchange=json.loads(raw["last_exchange"]) if raw.get("last_exchange") else None,
            history=json.loads(raw.get("history") or "[]"),
            problems=json.loads(raw.get("problems") or "[]"),
            waiting_until=float(raw["waiting_until"]) if raw.get("waiting_until") else None,
            waiting_reason=raw.get("waiting_reason", ""),
        )


@dataclass(frozen=True)
class Accepted:
    event_id: str
    status: Status
    duplicate: bool


# Record an event, remember its webhook-id, and queue its fan-out job, or answer the event that already
# holds this webhook-id. KEYS: dedup, event, events index, status index, job key, queue.
# ARGV: event id, dedup ttl s, queue score ms, job id ('' = no job), job body, job expiry ms, status,
#       index score us, fields...
_ACCEPT = """
local existing = redis.call('GET', KEYS[1])
if existing then
  return {existing, redis.call('HGET', KEYS[2]:gsub('[^:]+$', existing), 'status') or 'queued', 1}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 9))
redis.call('ZADD', KEYS[3], ARGV[8], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('PSETEX', KEYS[5], ARGV[6], ARGV[5])
  redis.call('ZADD', KEYS[6], ARGV[3], ARGV[4])
end
return {ARGV[1], ARGV[7], 0}
"""

# Move an event to a status, keeping the status indexes exact. KEYS: event. ARGV: status, score, fields...
_SET_STATUS = """
local old = redis.call('HGET', KEYS[1], 'status')
if not old then return false end
local prefix = KEYS[1]:gsub('event:[^:]+$', 'status:')
local id = redis.call('HGET', KEYS[1], 'id')
if old ~= ARGV[1] then
  redis.call('ZREM', prefix .. old, id)
  redis.call('ZADD', prefix .. ARGV[1], ARGV[2], id)
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], unpack(ARGV, 3))
return old
"""

# The highest try number any sync of this event reached. KEYS: event. ARGV: try.
_RECORD_TRY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return end
if tonumber(redis.call('HGET', KEYS[1], 'tries') or 0) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'tries', ARGV[1])
end
redis.call('HDEL', KEYS[1], 'waiting_until', 'waiting_reason')
"""

# Record one route's outcome; once every route of the event has one, settle the event's status:
# failed if any route failed, ignored if all were ignored, otherwise done. A failed route's reason and
# exchange (or an ignored event's reason) are written in the same step: an event is never failed without.
# KEYS: event. ARGV: route, outcome json, outcome status, score, failure reason, failure's last exchange,
# reason if ignored.
_RECORD_OUTCOME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'outcome:' .. ARGV[1], ARGV[2])
local routes = cjson.decode(redis.call('HGET', KEYS[1], 'routes') or '[]')
local failed, ignored, missing = false, true, false
for _, route in ipairs(routes) do
  local raw = redis.call('HGET', KEYS[1], 'outcome:' .. route)
  if not raw then
    missing = true
  else
    local status = cjson.decode(raw)['status']
    if status == 'failed' then failed = true end
    if status ~= 'ignored' then ignored = false end
  end
end
local current = redis.call('HGET', KEYS[1], 'status')
local status = current
if not missing then
  if failed then status = 'failed' elseif ignored then status = 'ignored' else status = 'done' end
end
if status ~= current then
  local prefix = KEYS[1]:gsub('event:[^:]+$', 'status:')
  local id = redis.call('HGET', KEYS[1], 'id')
  redis.call('ZREM', prefix .. current, id)
  redis.call('ZADD', prefix .. status, ARGV[4], id)
  redis.call('HSET', KEYS[1], 'status', status)
end
if ARGV[3] == 'failed' then
  redis.call('HSET', KEYS[1], 'reason', ARGV[5], 'last_exchange', ARGV[6])
elseif status == 'ignored' then
  redis.call('HSET', KEYS[1], 'reason', ARGV[7])
end
return status
"""

# Deliberately run an event again: a new generation, a fresh fan-out job. Refused while it is queued or
# running, or when another re-enqueue got there first. KEYS: event, job key, queue.
# ARGV: expected generation, queue score ms, job id, job body, job expiry ms, note json, index score us.
_REQUEUE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status == 'queued' or status == 'running' then return {status, ''} end
if redis.call('HGET', KEYS[1], 'generation') ~= ARGV[1] then return {'queued', ''} end
local id = redis.call('HGET', KEYS[1], 'id')
local history = cjson.decode(redis.call('HGET', KEYS[1], 'history') or '[]')
table.insert(history, cjson.decode(ARGV[6]))
local outcomes = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if name:sub(1, 8) == 'outcome:' then table.insert(outcomes, name) end
end
if #outcomes > 0 then redis.call('HDEL', KEYS[1], unpack(outcomes)) end
local prefix = KEYS[1]:gsub('event:[^:]+$', 'status:')
redis.call('ZREM', prefix .. status, id)
redis.call('ZADD', prefix .. 'queued', ARGV[7], id)
redis.call('HSET', KEYS[1], 'status', 'queued', 'reason', '', 'generation', ARGV[1] + 1,
           'history', cjson.encode(history))
redis.call('PSETEX', KEYS[2], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return {status, ARGV[3]}
"""

# An operator gives up on a failed event: it leaves the failed store (so no bulk retry picks it up) for the
# `discarded` index, keeping its reason, outcomes and exchange; the note (who, when, why) joins its history.
# KEYS: event. ARGV: note json, index score us. Returns the status it had ('missing' when there is none).
_DISCARD = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'failed' then return status end
local id = redis.call('HGET', KEYS[1], 'id')
local history = cjson.decode(redis.call('HGET', KEYS[1], 'history') or '[]')
table.insert(history, cjson.decode(ARGV[1]))
local prefix = KEYS[1]:gsub('event:[^:]+$', 'status:')
redis.call('ZREM', prefix .. 'failed', id)
redis.call('ZADD', prefix .. 'discarded', ARGV[2], id)
redis.call('HSET', KEYS[1], 'status', 'discarded', 'history', cjson.encode(history))
return status
"""


# With redis_wait_replicas: how long after the answer's latest moment an event's fan-out is due.
AFTER_THE_ANSWER_MS = 1000


class NotReplicated(RedisError):
    """The event is on the primary but not yet on `redis_wait_replicas` replicas: a failover now could
    lose it, so it is not acknowledged (the listener answers 503; a resend finds it, or records it again)."""


class EventReader:
    """A look at the events in Redis (status, the event lists): reads only, so it needs no policy."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, event_id: str) -> Event | None:
        raw = await done(self.redis.hgetall(keys.event(event_id)))
        if not raw:
            return None
        return Event.from_hash({text(k): text(v) for k, v in raw.items()})

    async def get_many(self, event_ids: list[str]) -> list[Event | None]:
        """Several events in one round trip, in the order asked (None where an event is gone)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.hgetall(keys.event(event_id))
            raws = await pipe.execute()
        return [Event.from_hash({text(k): text(v) for k, v in raw.items()}) if raw else None for raw in raws]

    async def only_synthetic(self, event_ids: list[str]) -> bool:
        """Whether every one of the events was recorded by a backfill or an audit (none is a hook's): their
        sync is bulk work, which gives way to the hooks' in the shared API budget."""
        if not event_ids:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.hget(keys.event(event_id), "action")
            actions = await pipe.execute()
        return all(action is not None and text(action) in SYNTHETIC for action in actions)

    async def attempts(self, event_id: str) -> list[dict[str, Any]]:
        """The event's timeline of tries, oldest first."""
        raw = await done(self.redis.lrange(keys.tries(event_id), 0, -1))
        return [json.loads(text(item)) for item in raw]

    async def ids(
        self, status: Status | None = None, *, limit: int = 100, newest_first: bool = True
    ) -> list[str]:
        key = keys.by_status(status) if status else keys.EVENTS
        if newest_first:
            raw = await self.redis.zrevrange(key, 0, limit - 1)
        else:
            raw = await self.redis.zrange(key, 0, limit - 1)
        return [text(item) for item in raw]

    async def count(self, status: Status | None = None) -> int:
        return int(await done(self.redis.zcard(keys.by_status(status) if status else keys.EVENTS)))


class EventStore(EventReader):
    """Events, their statuses and the failed store, in Redis: recorded, moved on, retried."""

    @classmethod
    def for_settings(cls, redis: Redis, settings: Settings) -> EventStore:
        """The store with the configured dedup window and job expiry: the way the runtime builds one."""
        return cls(
            redis,
            dedup_ttl=settings.dedup_ttl,
            job_expiry_ms=settings.job_expiry_ms,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=int(settings.redis_wait_timeout * 1000),
        )

    def __init__(
        self,
        redis: Redis,
        *,
        dedup_ttl: int,
        job_expiry_ms: int,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        super().__init__(redis)
        self.dedup_ttl = dedup_ttl
        self.job_expiry_ms = job_expiry_ms
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._accept = redis.register_script(_ACCEPT)
        self._set_status = redis.register_script(_SET_STATUS)
        self._record_outcome = redis.register_script(_RECORD_OUTCOME)
        self._requeue = redis.register_script(_REQUEUE)
        self._record_try = redis.register_script(_RECORD_TRY)
        self._discard = redis.register_script(_DISCARD)

    async def accept(
        self,
        *,
        source: str,
        action: str,
        payload: dict[str, Any],
        webhook_id: str,
        ignored_reason: str | None = None,
        failed_reason: str | None = None,
        problems: Sequence[str] = (),
    ) -> Accepted:
        """Record a hook and queue its fan-out in one step, or return the event that has this webhook-id.

        An ignored hook is recorded with its reason and queues nothing; so is a failed one (an authentic hook
        no sync can come of), which lands in the failed store for a person. ``problems``: fields of the hook
        that did not parse, noted on the event.
        """
        event_id = new_event_id()
        score = now_ms()
        status: Status = "failed" if failed_reason else "ignored" if ignored_reason else "queued"
        queued = status == "queued"
        job_id = fan_out_job_id(event_id, 0) if queued else ""
        body = job_body(FAN_OUT, (event_id,), score) if queued else b""
        fields = {
            "id": event_id,
            "source": source,
            "action": action,
            "payload": json.dumps(payload, separators=(",", ":")),
            "received_at": f"{score / 1000:.3f}",
            "status": status,
            "webhook_id": webhook_id,
            "generation": "0",
            "tries": "0",
            "reason": failed_reason or ignored_reason or "",
        }
        if problems:
            fields["problems"] = json.dumps(list(problems))
        flat = [item for pair in fields.items() for item in pair]
        script_keys = [
            keys.webhook(source, webhook_id),
            keys.event(event_id),
            keys.EVENTS,
            keys.by_status(status),
            keys.job(job_id),
            keys.QUEUE,
        ]
        # Waiting for replicas, the fan-out is due a second after the listener has answered: a worker that
        # read the invoice while HostFact still waits for the hook would find its row uncommitted (HostFact
        # fires hooks inside the request), and a WAIT that times out takes wait_timeout to answer.
        due = score + (self.wait_timeout_ms + AFTER_THE_ANSWER_MS if self.wait_replicas else 0)
        args: list[str | bytes | int] = [
            event_id,
            self.dedup_ttl,
            due,
            job_id,
            body,
            self.job_expiry_ms,
            status,
            now_us(),
            *flat,
        ]
        if not self.wait_replicas:
            result = await self._accept(keys=script_keys, args=args)
        else:
            # WAIT counts the replicas that have this connection's writes: the script and WAIT must go
            # down one connection, hence one pipeline.
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._accept(keys=script_keys, args=args, client=pipe)
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                result, replicas = await pipe.execute()
            if int(replicas) < self.wait_replicas:
                raise NotReplicated(
                    f"{replicas} of {self.wait_replicas} replica(s) confirmed the event within "
                    f"{self.wait_timeout_ms} ms"
                )
        stored_id, stored_status, duplicate = (text(part) for part in result)
        if status == "failed" and duplicate != "1":
            await self.count_failure()
        return Accepted(stored_id, stored_status, duplicate == "1")  # type: ignore[arg-type]

    async def record(self, *, source: str, action: str, payload: dict[str, Any], routes: list[str]) -> str:
        """Record an event no hook sent (a backfill, an audit's fix), already fanned out to ``routes``.

        The caller schedules the syncs; their outcomes settle it like any event's.
        """
        event_id = new_event_id()
        score = now_us()
        fields = {
            "id": event_id,
            "source": source,
            "action": action,
            "payload": json.dumps(payload, separators=(",", ":")),
            "received_at": f"{score / 1_000_000:.3f}",
            "status": "running",
            "webhook_id": "",
            "generation": "0",
            "tries": "0",
            "reason": "",
            "routes": json.dumps(routes),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.event(event_id), mapping=fields)
            pipe.zadd(keys.EVENTS, {event_id: score})
            pipe.zadd(keys.by_status("running"), {event_id: score})
            await pipe.execute()
        return event_id

    async def set_status(self, event_id: str, status: Status, **fields: Any) -> str | None:
        """Move an event to ``status`` (updating the indexes) and set extra fields; returns the old status."""
        flat: list[Any] = []
        for name, value in fields.items():
            flat += [name, value if isinstance(value, str | int | float) else json.dumps(value)]
        old = await self._set_status(keys=[keys.event(event_id)], args=[status, now_us(), *flat])
        if old and status == "failed" and text(old) != "failed":
            await self.count_failure()
        return text(old) if old else None

    async def start(self, event_id: str, routes: list[str]) -> None:
        """The fan-out began: remember which routes must each record an outcome."""
        await self.set_status(event_id, "running", routes=json.dumps(routes))

    async def record_try(self, event_id: str, job_try: int) -> None:
        """A sync of the event starts: its try number, and it waits no more."""
        await self._record_try(keys=[keys.event(event_id)], args=[job_try])

    async def record_attempt(self, event_id: str, entry: dict[str, Any], *, waiting: str = "") -> None:
        """One try's line in the event's timeline; ``waiting``: the reason the next try waits until
        ``entry["until"]`` (the event shows as waiting, not running, meanwhile)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(keys.tries(event_id), json.dumps(entry, separators=(",", ":"), default=str))
            pipe.ltrim(keys.tries(event_id), -TIMELINE_LENGTH, -1)
            if waiting:
                pipe.hset(
                    keys.event(event_id),
                    mapping={"waiting_until": f"{entry['until']:.3f}", "waiting_reason": waiting},
                )
            await pipe.execute()

    async def record_outcome(self, event_id: str, route: str, outcome: dict[str, Any]) -> str | None:
        """Store what a route did for this event; returns the event's status afterwards."""
        exchange = outcome.get("exchange")
        status = await self._record_outcome(
            keys=[keys.event(event_id)],
            args=[
                route,
                json.dumps(outcome, separators=(",", ":")),
                outcome["status"],
                now_us(),
                f"{route}: {outcome.get('reason', '')}",
                json.dumps(exchange) if exchange else "",
                # Settled as ignored: why, on the event itself, where operators list and filter reasons.
                f"{route}: {outcome.get('detail', '')}",
            ],
        )
        if status and text(status) == "failed":
            await self.count_failure()
        return text(status) if status else None

    async def count_failure(self) -> None:
        """Count an event settling as failed, in its 5-minute bucket (kept two hours)."""
        key = keys.failures(int(time.time()) // FAILURE_BUCKET * FAILURE_BUCKET)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 2 * 3600)
            await pipe.execute()

    async def requeue(self, event_id: str, *, by: str) -> tuple[str, str]:
        """Re-enqueue an event that is done, ignored or failed. Returns (previous status, new job id);
        the job id is empty when nothing was done (queued or running already, or no such event)."""
        generation = await done(self.redis.hget(keys.event(event_id), "generation"))
        if generation is None:
            return "missing", ""
        score = now_ms()
        job_id = fan_out_job_id(event_id, int(generation) + 1)
        note = {"requeued_at": round(time.time(), 3), "by": by, "generation": int(generation) + 1}
        previous, queued = await self._requeue(
            keys=[keys.event(event_id), keys.job(job_id), keys.QUEUE],
            args=[
                text(generation),
                score,
                job_id,
                job_body(FAN_OUT, (event_id,), score),
                self.job_expiry_ms,
                json.dumps(note),
                now_us(),
            ],
        )
        return text(previous), text(queued)

    async def discard(self, event_id: str, *, by: str, reason: str) -> str:
        """Take a failed event out of the failed store for good, keeping it (status `discarded`) for audit.

        Returns the status it had: only a `failed` one is discarded ('missing' when there is no such event).
        """
        note = {"discarded_at": round(time.time(), 3), "by": by, "reason": reason}
        previous = await self._discard(keys=[keys.event(event_id)], args=[json.dumps(note), now_us()])
        return text(previous)
