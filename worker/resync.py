"""Syncs an operator starts (`factsync backfill`, `factsync audit --fix`), recorded as events like any hook's.

Each invoice gets an event (action `backfill` or `audit`) already fanned out to its route, and its sync is
scheduled through `Documents.schedule`, so coalescing and the document's lock apply as they do to hooks.
Their calls, and the command's own reads, are bulk calls (`worker.ratelimit.bulk_calls`): the hooks' syncs
go first in the shared budget. A run stopped half way (Ctrl-C) keeps what it did; run again, it skips the
mirrors in step and makes only what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from tasks.audit import AuditReport, Checked, Drift, audit_route
from tasks.backfill import Progress, budget_eta, estimated_calls, plan_backfill
from tasks.client import ApiClient, api_session
from tasks.drift import Difference
from tasks.invoice import Status
from tasks.model import Route
from tasks.sync import ABSENT
from worker import keys
from worker.config import Settings
from worker.documents import Documents
from worker.heartbeat import heartbeats
from worker.idmap import RedisIdMap
from worker.operate import NoWorker
from worker.ratelimit import LimitEvent, SharedRateLimit, bulk_calls
from worker.redisio import done, text
from worker.store import AUDIT, BACKFILL, FINAL, EventStore

Stopped = Callable[[], bool]
# Syncs a backfill keeps unfinished at a time: enough to keep the budget busy, and under the workers' max_jobs
# (20 by default) so that a hook's sync always finds a worker free.
WINDOW = 6
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
    # The bulk run's listing found no mirror (at this epoch time): the sync makes it without a search.
    absent_since: float | None = None
    # (source, target) calls its sync is likely to make, for the ETA.
    calls: tuple[int, int] = (1, 2)


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
    # A backfill's: mirrors whose list row agreed with the source's (nothing scheduled), and of those
    # scheduled, how many were made without a search.
    in_step: int = 0
    created: int = 0
    # Stopped (Ctrl-C) before every sync was scheduled; run the command again to go on.
    interrupted: bool = False
    planned: int = 0


@contextlib.asynccontextmanager
async def route_clients(
    settings: Settings, redis: Redis, route: Route, *, notice: Notice | None = None
) -> AsyncIterator[tuple[ApiClient, ApiClient]]:
    """API clients for a route's source and target, throttled by the budget the workers share; the calls
    made inside are bulk calls, which leave the burst to the hooks' syncs. A ban pause is waited out (up to
    CLI_MAX_WAIT), and ``notice`` told."""
    source, target = settings.source(route.source), settings.target(route.target)

    def told(event: LimitEvent) -> None:
        if event.kind == "paused" and event.seconds > 0 and notice is not None:
            notice(_paused(event.administration, event.seconds))

    throttle = SharedRateLimit(
        redis,
        {source.name: source.rate_limit_per_minute, target.name: target.rate_limit_per_minute},
        max_wait=CLI_MAX_WAIT,
        on_event=told,
        wait_paused=True,
    )
    async with api_session() as session, bulk_calls():
        yield (
            ApiClient(source, session=session, throttle=throttle),
            ApiClient(target, session=session, throttle=throttle),
        )


def _paused(administration: str, seconds: float) -> str:
    return f"waiting: calls to {administration} are paused {seconds:.0f} s more after a ban (HTTP 403)"


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
    window: int = WINDOW,
    wait: bool = True,
    progress: Progress | None = None,
    notice: Notice | None = None,
    stopped: Stopped | None = None,
    barrier: int = 0,
) -> SyncRun:
    """Record an event per invoice and schedule its sync on ``route``.

    ``barrier``: with ``wait``, let the first this many finish before any more is scheduled.

    ``wait``: keep at most ``window`` of them unfinished at a time and wait for the last, so a large run
    neither floods the queue nor spends its retries waiting for the API budget; ``progress`` then counts
    finished syncs, else scheduled ones, with the seconds the budget needs for the calls left. ``notice`` is
    told when the wait is a ban pause (nothing moves until it ends), so the operator is not left looking at a
    still progress bar. ``stopped`` is asked before each sync is scheduled: once it says so, no more are (the
    scheduled ones finish on the workers) and the run is marked interrupted.
    """
    store = EventStore.for_settings(redis, settings)
    documents = Documents(redis, lease_ms=settings.lease_ms, job_expiry_ms=settings.job_expiry_ms)
    ids = RedisIdMap(redis, route.name)
    if wait and invoices:
        await ensure_worker(redis)
    run = SyncRun(waited=wait, planned=len(invoices))
    pending: list[str] = []
    total = len(invoices)
    rates = (
        settings.source(route.source).rate_limit_per_minute,
        settings.target(route.target).rate_limit_per_minute,
    )
    # Calls still to come: of the syncs not finished (or not scheduled), per administration.
    calls_left = [sum(item.calls[0] for item in invoices), sum(item.calls[1] for item in invoices)]
    calls_of: dict[str, tuple[int, int]] = {}

    def eta() -> float:
        return budget_eta(zip(rates, calls_left, strict=True))

    last_change = time.monotonic()
    limiter = SharedRateLimit(redis, {})
    told: set[str] = set()

    async def tell_pauses() -> None:
        for name in (route.source, route.target):
            seconds = await limiter.paused_for(name)
            if seconds > 0 and name not in told and notice is not None:
                notice(_paused(name, seconds))
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
                for event_id in finished:
                    source_calls, target_calls = calls_of.pop(event_id, (0, 0))
                    calls_left[0] -= source_calls
                    calls_left[1] -= target_calls
                pending = [eid for eid, status in zip(pending, statuses, strict=True) if status not in FINAL]
                last_change = time.monotonic()
                if progress is not None:
                    progress(sum(run.outcomes.values()), total, eta())
                continue
            still = time.monotonic() - last_change
            if still > _PAUSE_CHECK:
                await tell_pauses()
            if still > _STALL_CHECK:
                await ensure_worker(redis)
                last_change = time.monotonic()
            await asyncio.sleep(0.1)

    for number, item in enumerate(invoices):
        if wait:
            await settle(1 if number == barrier and barrier else window)
        if stopped is not None and stopped():
            run.interrupted = True
            break
        if item.absent_since is not None:
            await ids.put(ABSENT, item.document, str(item.absent_since))
            run.created += 1
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
        calls_of[event_id] = item.calls
        if not wait and progress is not None:
            progress(len(run.event_ids), total)
    if wait and not run.interrupted:
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
    window: int = WINDOW,
    wait: bool = True,
    progress: Progress | None = None,
    notice: Notice | None = None,
    stopped: Stopped | None = None,
) -> SyncRun:
    """Bring the target in step with every source invoice the route mirrors (or those modified since
    ``since``): one listing of each side decides; only mirrors that are missing or differ get a sync."""
    async with route_clients(settings, redis, route, notice=notice) as (source, target):
        plan = await plan_backfill(
            route, source=source, target=target, ids=RedisIdMap(redis, route.name), since=since
        )
    note = {"since": since.isoformat(sep=" ", timespec="seconds")} if since else {}
    work = [
        ToSync(invoice.id, invoice.code, note, plan.listed_at, estimated_calls(invoice, create=True))
        for invoice in plan.create
    ] + [
        ToSync(invoice.id, invoice.code, note, None, estimated_calls(invoice, create=False))
        for invoice in plan.sync
    ]
    # Oldest first, so mirrors are made in the order the source made the invoices; but first the first
    # invoice of each debtor the target lacks, alone, so that its sync makes the debtor before others of
    # the same debtor race to search for it and make it too; and credited ones last: the target gives the
    # credit invoice it makes its own next number until the sync renumbers it, which a mirror being made
    # beside it would need (refused, searched, retried).
    credited = {invoice.id for invoice in plan.create + plan.sync if invoice.status is Status.CANCELLED}
    work.sort(key=lambda item: (item.document in credited, int(item.document)))
    parties = {invoice.id: invoice.party for invoice in plan.create}
    firsts: dict[str, ToSync] = {}
    for item in work:
        party = parties.get(item.document)
        if party in plan.new_parties and party not in firsts:
            firsts[party] = item
    leading = list(firsts.values())
    work = leading + [item for item in work if item not in leading]
    run = await schedule_syncs(
        settings,
        redis,
        route,
        work,
        barrier=len(leading),
        action=BACKFILL,
        window=window,
        wait=wait,
        progress=progress,
        notice=notice,
        stopped=stopped,
    )
    run.listed, run.skipped, run.in_step = plan.listed, plan.skipped, plan.in_step
    return run


# How long what an audit read whole is kept for a resume.
AUDIT_KEPT_SECONDS = 7 * 24 * 3600


async def audit(
    settings: Settings,
    redis: Redis,
    route: Route,
    *,
    since: datetime | None = None,
    deep: bool = False,
    progress: Progress | None = None,
    stopped: Stopped | None = None,
    resume: bool = False,
) -> AuditReport:
    """Compare the route's target with its source (read only): by list rows, or ``deep``, whole.

    What it reads whole is kept in Redis until it ends; ``resume`` goes on from an audit that did not end
    (Ctrl-C): an invoice read whole then, whose list rows (its own and its mirror's) have not changed since,
    is not read again."""
    key = keys.audit_checked(route.name)
    earlier = await _checked(redis, key) if resume else {}
    if not resume:
        await done(redis.delete(key))

    async def checked(source_id: str, check: Checked) -> None:
        drift = asdict(check.drift) if check.drift is not None else None
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, source_id, json.dumps({"stamp": check.stamp, "drift": drift}))
            pipe.expire(key, AUDIT_KEPT_SECONDS)
            await pipe.execute()

    async with route_clients(settings, redis, route) as (source, target):
        report = await audit_route(
            route,
            source=source,
            target=target,
            ids=RedisIdMap(redis, route.name),
            since=since,
            deep=deep,
            progress=progress,
            stopped=stopped,
            earlier=earlier,
            checked=checked,
        )
    if not report.interrupted:
        await done(redis.delete(key))
    return report


async def _checked(redis: Redis, key: str) -> dict[str, Checked]:
    found: dict[str, Checked] = {}
    for source_id, raw in (await done(redis.hgetall(key))).items():
        entry = json.loads(raw)
        drift = entry["drift"]
        if drift is not None:
            drift["differences"] = tuple(Difference(**d) for d in drift["differences"])
            drift = Drift(**drift)
        found[text(source_id)] = Checked(entry["stamp"], drift)
    return found


async def fix(
    settings: Settings,
    redis: Redis,
    route: Route,
    drifts: list[Drift],
    *,
    window: int = WINDOW,
    wait: bool = True,
    progress: Progress | None = None,
    notice: Notice | None = None,
    stopped: Stopped | None = None,
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
        stopped=stopped,
    )
