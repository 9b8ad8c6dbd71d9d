"""Syncs an operator starts (`factsync backfill`, `factsync audit --fix`), recorded as events like any hook's.

Each invoice gets an event (action `backfill` or `audit`) already fanned out to its route, and its sync is
scheduled through `Documents.schedule`, so coalescing and the document's lock apply as they do to hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from tasks.audit import AuditReport, Drift, audit_route
from tasks.backfill import source_invoices, to_mirror
from tasks.client import ApiClient, api_session
from tasks.model import Route
from worker import keys
from worker.config import Settings
from worker.documents import Documents
from worker.heartbeat import heartbeats
from worker.idmap import RedisIdMap
from worker.operate import NoWorker
from worker.ratelimit import SharedRateLimit
from worker.redisio import text
from worker.store import AUDIT, BACKFILL, FINAL, EventStore

Progress = Callable[[int, int], None]
# How long an operator's command waits for one API slot before giving up: the workers share the budget.
CLI_MAX_WAIT = 60.0
# With nothing finishing for this long, check that a worker is still alive to finish anything.
_STALL_CHECK = 30.0
# Nothing finished for this long: see whether a ban pause holds the syncs, and say so.
_PAUSE_CHECK = 2.0
Notice = Callable[[str], None]


@dataclass(frozen=True)
class ToSync:
    """One source invoice to sync: its id, its number, and what the event should say about why."""

    document: str
    code: str
    note: dict[str, Any] = field(default_factory=dict)


@dataclass
class SyncRun:
    """The events one backfill or fix recorded, and how they ended (when it waited for them)."""

    event_ids: list[str] = field(default_factory=list)
    # A plain dict, not a Counter: dataclasses.asdict rebuilds a Counter from (key, value) pairs, counting the
    # pairs, and `--json` then met tuple keys.
    outcomes: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    listed: int = 0
    waited: bool = False


@contextlib.asynccontextmanager
async def route_clients(
    settings: Settings, redis: Redis, route: Route
) -> AsyncIterator[tuple[ApiClient, ApiClient]]:
    """API clients for a route's source and target, throttled by the budget the workers share."""
    source, target = settings.source(route.source), settings.target(route.target)
    throttle = SharedRateLimit(
        redis,
        {source.name: source.rate_limit_per_minute, target.name: target.rate_limit_per_minute},
        max_wait=CLI_MAX_WAIT,
    )
    async with api_session() as session:
        yield (
            ApiClient(source, session=session, throttle=throttle),
            ApiClient(target, session=session, throttle=throttle),
        )


async def ensure_worker(redis: Redis) -> None:
    if not any(beat.fresh for beat in await heartbeats(redis)):
        raise NoWorker(
            "no worker is running to sync anything: start one (`factsync worker`, or `factsync run`), "
            "or pass --no-wait to only schedule the syncs"
        )


async def schedule_syncs(
    settings: Settings,
    redis: Redis,
    route: Route,
    invoices: list[ToSync],
    *,
    action: str,
    window: int = 20,
    wait: bool = True,
    progress: Progress | None = None,
    notice: Notice | None = None,
) -> SyncRun:
    """Record an event per invoice and schedule its sync on ``route``.

    ``wait``: keep at most ``window`` of them unfinished at a time and wait for the last, so a large run
    neither floods the queue nor spends its retries waiting for the API budget; ``progress`` then counts
    finished syncs, else scheduled ones. ``notice`` is told when the wait is a ban pause (nothing moves
    until it ends), so the operator is not left looking at a still progress bar.
    """
    store = EventStore.for_settings(redis, settings)
    documents = Documents(redis, lease_ms=settings.lease_ms, job_expiry_ms=settings.job_expiry_ms)
    if wait and invoices:
        await ensure_worker(redis)
    run = SyncRun(waited=wait)
    pending: list[str] = []
    total = len(invoices)
    last_change = time.monotonic()
    limiter = SharedRateLimit(redis, {})
    told: set[str] = set()

    async def tell_pauses() -> None:
        for name in (route.source, route.target):
            seconds = await limiter.paused_for(name)
            if seconds > 0 and name not in told and notice is not None:
                notice(f"waiting: calls to {name} are paused {seconds:.0f} s more after a ban (HTTP 403)")
                told.add(name)
            elif seconds <= 0:
                told.discard(name)

    async def settle(until_below: int) -> None:
        nonlocal pending, last_change
        while len(pending) >= max(until_below, 1):
            statuses = await _statuses(redis, pending)
            finished = [eid for eid, status in zip(pending, statuses, strict=True) if status in FINAL]
            if finished:
                for status in statuses:
                    if status in FINAL:
                        run.outcomes[status] = run.outcomes.get(status, 0) + 1
                pending = [eid for eid, status in zip(pending, statuses, strict=True) if status not in FINAL]
                last_change = time.monotonic()
                if progress is not None:
                    progress(sum(run.outcomes.values()), total)
                continue
            still = time.monotonic() - last_change
            if still > _PAUSE_CHECK:
                await tell_pauses()
            if still > _STALL_CHECK:
                await ensure_worker(redis)
                last_change = time.monotonic()
            await asyncio.sleep(0.1)

    for item in invoices:
        if wait:
            await settle(window)
        event_id = await store.record(
            source=route.source,
            action=action,
            # The keys a hook's payload has, so listing by --invoice finds these too.
            payload={"id": int(item.document), "InvoiceCode": item.code, "route": route.name, **item.note},
            routes=[route.name],
        )
        await documents.schedule(route.name, item.document, event_id)
        run.event_ids.append(event_id)
        pending.append(event_id)
        if not wait and progress is not None:
            progress(len(run.event_ids), total)
    if wait:
        await settle(1)
    return run


async def _statuses(redis: Redis, event_ids: list[str]) -> list[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.hget(keys.event(event_id), "status")
        raw = await pipe.execute()
    return [text(value) for value in raw]


async def backfill(
    settings: Settings,
    redis: Redis,
    route: Route,
    *,
    since: datetime | None = None,
    window: int = 20,
    wait: bool = True,
    progress: Progress | None = None,
    notice: Notice | None = None,
) -> SyncRun:
    """Schedule a sync of every source invoice the route mirrors (or of those modified since ``since``)."""
    async with route_clients(settings, redis, route) as (source, _):
        rows = await source_invoices(source, since=since)
    wanted, skipped = to_mirror(route, rows)
    note = {"since": since.isoformat(sep=" ", timespec="seconds")} if since else {}
    run = await schedule_syncs(
        settings,
        redis,
        route,
        [ToSync(invoice.id, invoice.code, note) for invoice in wanted],
        action=BACKFILL,
        window=window,
        wait=wait,
        progress=progress,
        notice=notice,
    )
    run.listed, run.skipped = len(rows), skipped
    return run


async def audit(
    settings: Settings,
    redis: Redis,
    route: Route,
    *,
    since: datetime | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """Compare the route's target with its source (read only)."""
    async with route_clients(settings, redis, route) as (source, target):
        return await audit_route(
            route,
            source=source,
            target=target,
            ids=RedisIdMap(redis, route.name),
            since=since,
            progress=progress,
        )


async def fix(
    settings: Settings,
    redis: Redis,
    route: Route,
    drifts: list[Drift],
    *,
    window: int = 20,
    wait: bool = True,
    progress: Progress | None = None,
    notice: Notice | None = None,
) -> SyncRun:
    """Schedule a sync of each drifted invoice a sync can mend, the way a backfill does."""
    invoices = [
        ToSync(drift.source_id, drift.code, {"drift": [difference.field for difference in drift.differences]})
        for drift in drifts
        if drift.fixable
    ]
    return await schedule_syncs(
        settings,
        redis,
        route,
        invoices,
        action=AUDIT,
        window=window,
        wait=wait,
        progress=progress,
        notice=notice,
    )
