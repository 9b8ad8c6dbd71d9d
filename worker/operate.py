"""What operators ask of factsync and do to its events: queries, re-enqueue, discard and the status summary.

Shared by the `factsync` commands and the dashboard, so both answer the same question the same way.
"""

from __future__ import annotations

import getpass
import math
import os
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from redis.asyncio import Redis

from worker import keys
from worker.documents import run_now
from worker.heartbeat import Heartbeat, heartbeats
from worker.queue import now_ms
from worker.ratelimit import Role, SharedRateLimit, published_limits
from worker.redisio import done, text
from worker.store import STATUSES, Event, EventReader, EventStore, Status


class NoWorker(RuntimeError):
    """Nothing would run the syncs: no worker has a fresh heartbeat."""


# Ids read from an index per round trip while filtering.
_BATCH = 500
# Statuses an event waits in: the fan-out job is queued, or syncs of its routes are.
WAITING: tuple[Status, ...] = ("queued", "running")
# What `events replay` runs again; `failed retry` runs failed events only.
REPLAYABLE: frozenset[str] = frozenset({"done", "ignored", "failed", "discarded"})
RETRYABLE: frozenset[str] = frozenset({"failed"})

Progress = Callable[[int, int], None]


def operator() -> str:
    """Who acts, for an event's history: $FACTSYNC_OPERATOR, else user@host."""
    named = os.environ.get("FACTSYNC_OPERATOR", "").strip()
    if named:
        return named
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # a container user without a passwd entry
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WHEN_HELP = (
    "an ISO date or datetime (2026-01-31, 2026-01-31T14:00; local time unless it names a zone) "
    "or an age (90m, 2h, 3d)"
)


def parse_when(text: str, *, now: float | None = None) -> float:
    """An operator's point in time as epoch seconds: ISO date/datetime (local time when naive) or an age."""
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return (time.time() if now is None else now) - float(relative.group(1)) * _UNITS[relative.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give {WHEN_HELP}") from None
    return moment.timestamp()  # naive → the local time zone, as an operator at a terminal means it


# -- finding events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """Which events to list; every field left None matches all. Times are epoch seconds of arrival."""

    status: Status | None = None
    action: str | None = None
    source: str | None = None
    route: str | None = None
    # An InvoiceCode, as the hook or the backfill named it (the credit invoice's code matches too).
    invoice: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, event: Event) -> bool:
        if self.status is not None and event.status != self.status:
            return False
        if self.action is not None and event.action != self.action:
            return False
        if self.source is not None and event.source != self.source:
            return False
        if self.route is not None and self.route not in event.routes and self.route not in event.outcomes:
            return False
        if self.invoice is not None and self.invoice.lower() not in _codes(event):
            return False
        if self.since is not None and event.received_at < self.since:
            return False
        return self.until is None or event.received_at <= self.until


def _codes(event: Event) -> set[str]:
    return {
        str(event.payload[name]).lower()
        for name in ("InvoiceCode", "CreditInvoiceCode")
        if event.payload.get(name) not in (None, "")
    }


async def list_events(
    store: EventReader, flt: EventFilter | None = None, *, limit: int | None = 50, skip: int = 0
) -> list[Event]:
    """Events matching ``flt``, newest first, past the first ``skip`` of them; ``limit=None`` for all."""
    flt = flt or EventFilter()
    index = keys.by_status(flt.status) if flt.status else keys.EVENTS
    # Index scores are microseconds: arrival in the events index, entry into the status in a status
    # index. An event enters a status after it arrives, so `since` bounds both; `until` bounds arrival only.
    low = "-inf" if flt.since is None else str(int(flt.since * 1_000_000))
    high = "+inf" if flt.until is None or flt.status else str(math.ceil(flt.until * 1_000_000))
    found: list[Event] = []
    offset = 0
    while limit is None or len(found) < limit:
        raw = await store.redis.zrevrangebyscore(index, high, low, start=offset, num=_BATCH)
        if not raw:
            break
        offset += len(raw)
        for event in await store.get_many([text(item) for item in raw]):
            if event is not None and flt.matches(event):
                if skip:
                    skip -= 1
                    continue
                found.append(event)
                if limit is not None and len(found) >= limit:
                    break
    return found


async def get_event(store: EventReader, event_id: str) -> Event | None:
    return await store.get(event_id.strip())


# -- re-enqueue and discard ----------------------------------------------------------------------------------

Verdict = Literal["requeued", "waiting", "refused", "missing", "hurried"]


@dataclass(frozen=True)
class Requeue:
    """What asking to run one event again did."""

    event_id: str
    verdict: Verdict
    # The event's status before; for "requeued" the new fan-out job's id is in job_id.
    previous: str
    job_id: str = ""
    detail: str = ""


async def requeue_events(
    store: EventStore,
    event_ids: Iterable[str],
    *,
    by: str,
    allowed: frozenset[str] = RETRYABLE,
    progress: Progress | None = None,
    now: bool = False,
) -> list[Requeue]:
    """Run each event again through `EventStore.requeue` (a new generation, a fresh fan-out job).

    Only events whose status is in ``allowed`` are re-enqueued; one already queued or running is left
    alone, so asking twice never runs an event twice at once. ``now``: an event whose sync waits out a
    retry backoff has that sync run at once instead ("hurried").
    """
    ids = [event_id.strip() for event_id in event_ids]
    results: list[Requeue] = []
    for count, event_id in enumerate(ids, start=1):
        results.append(await _requeue_one(store, event_id, by=by, allowed=allowed, now=now))
        if progress is not None:
            progress(count, len(ids))
    return results


async def _run_now(store: EventStore, event: Event) -> list[str | None]:
    document = str(event.payload.get("id", ""))
    return [await run_now(store.redis, route, document) for route in event.routes] if document else []


async def _requeue_one(
    store: EventStore, event_id: str, *, by: str, allowed: frozenset[str], now: bool = False
) -> Requeue:
    raw = await done(store.redis.hget(keys.event(event_id), "status"))
    status = text(raw) if raw is not None else "missing"
    if status == "missing":
        return Requeue(event_id, "missing", status, detail="no such event")
    if status in WAITING:
        event = await store.get(event_id)
        if event is not None and event.waiting(time.time()) and event.waiting_until is not None:
            if now:
                hurried = [job for job in await _run_now(store, event) if job]
                if hurried:
                    return Requeue(event_id, "hurried", status, hurried[0], "its waiting sync runs now")
            return Requeue(
                event_id,
                "waiting",
                status,
                detail=(
                    f"waiting for a later try ({event.waiting_reason}) until "
                    f"{datetime.fromtimestamp(event.waiting_until).astimezone():%H:%M:%S}; "
                    "--now runs it at once"
                ),
            )
        return Requeue(event_id, "waiting", status, detail=f"already {status}: nothing done")
    if status not in allowed:
        hint = "`factsync events replay` runs it again" if status in REPLAYABLE else ""
        return Requeue(event_id, "refused", status, detail=f"it is {status}, not failed; {hint}".rstrip("; "))
    previous, job_id = await store.requeue(event_id, by=by)
    if not job_id:
        # Someone re-enqueued it between the look and the requeue: it waits already.
        verdict: Verdict = "missing" if previous == "missing" else "waiting"
        return Requeue(event_id, verdict, previous, detail=f"already {previous}: nothing done")
    return Requeue(event_id, "requeued", previous, job_id, f"{previous} → queued as {job_id}")


@dataclass(frozen=True)
class Discard:
    event_id: str
    discarded: bool
    previous: str
    detail: str


async def discard_events(
    store: EventStore, event_ids: Iterable[str], *, by: str, reason: str
) -> list[Discard]:
    """Give up on failed events: they leave the failed store and stay listed as `discarded`, with why."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a discard needs a reason: it is kept with the event for whoever looks later")
    results: list[Discard] = []
    for event_id in (event_id.strip() for event_id in event_ids):
        previous = await store.discard(event_id, by=by, reason=reason)
        if previous == "failed":
            results.append(Discard(event_id, True, previous, "failed → discarded"))
        elif previous == "missing":
            results.append(Discard(event_id, False, previous, "no such event"))
        else:
            results.append(Discard(event_id, False, previous, f"it is {previous}, not failed: nothing done"))
    return results


def discarded_note(event: Event) -> dict[str, object] | None:
    """Who discarded the event, when and why; None unless it is discarded."""
    if event.status != "discarded":
        return None
    return next((note for note in reversed(event.history) if "discarded_at" in note), None)


# -- status --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """The event that has waited longest, in `status` since `since` (epoch seconds)."""

    event_id: str
    status: str
    action: str
    since: float

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.since)


@dataclass(frozen=True)
class Budget:
    """What the shared rate limiter knows of one administration right now."""

    administration: str
    role: Role
    per_minute: int
    burst: int
    # Calls that could go out this instant without waiting.
    available: int
    # Seconds left of a pause after a ban (WeFact's 403); 0 when not paused.
    paused_for: float


@dataclass(frozen=True)
class StatusReport:
    queued_jobs: int
    # Of those, jobs whose time has not come: retries waiting out their backoff.
    deferred_jobs: int
    events: dict[str, int]
    oldest_waiting: Waiting | None
    workers: list[Heartbeat]
    budgets: list[Budget] = field(default_factory=list)
    # Of the running events, those waiting for a later try (a backoff, a spent budget, a ban pause).
    waiting: int = 0


async def status_report(redis: Redis) -> StatusReport:
    """Queue depth, events per status, the longest wait, live workers and each API budget: Redis's word
    alone, so a look needs no configuration but where Redis is."""
    store = EventReader(redis)
    queued_jobs = int(await done(redis.zcard(keys.QUEUE)))
    deferred = int(await done(redis.zcount(keys.QUEUE, f"({now_ms()}", "+inf")))
    events: dict[str, int] = {status: await store.count(status) for status in STATUSES}
    return StatusReport(
        queued_jobs=queued_jobs,
        deferred_jobs=deferred,
        events=events,
        oldest_waiting=await _oldest_waiting(store),
        workers=await heartbeats(redis),
        budgets=await budgets(redis),
        waiting=await _waiting(store),
    )


async def _waiting(store: EventReader, limit: int = 10_000) -> int:
    """How many running events wait for a later try rather than being worked on."""
    now = time.time()
    running = await store.get_many(await store.ids("running", limit=limit))
    return sum(1 for event in running if event is not None and event.waiting(now))


async def _oldest_waiting(store: EventReader) -> Waiting | None:
    oldest: tuple[float, str, str] | None = None
    for status in WAITING:
        head = await store.redis.zrange(keys.by_status(status), 0, 0, withscores=True)
        if head:
            member, score = head[0]
            candidate = (float(score) / 1_000_000, text(member), status)
            oldest = candidate if oldest is None or candidate < oldest else oldest
    if oldest is None:
        return None
    since, event_id, in_status = oldest
    event = await store.get(event_id)
    return Waiting(event_id, in_status, event.action if event else "?", since)


async def budgets(redis: Redis) -> list[Budget]:
    """Each administration's budget as the shared limiter (GCRA in Redis) holds it, with the limits the
    newest worker published: what the workers apply, whatever configuration the operator's command read."""
    limits = await published_limits(redis)
    limiter = SharedRateLimit(redis, {name: limit.per_minute for name, limit in limits.items()})
    found: list[Budget] = []
    for name in sorted(limits, key=lambda n: (limits[n].role != "target", n)):
        available = await limiter.available(name)
        found.append(
            Budget(
                name,
                limits[name].role,
                limits[name].per_minute,
                limiter.burst,
                available,
                await limiter.paused_for(name),
            )
        )
    return found
