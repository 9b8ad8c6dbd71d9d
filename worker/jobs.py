"""The arq side: the fan-out job, the sync job around `tasks.sync`, and the worker's settings.

The retry loop lives here and only here: transient API failures come back as arq `Retry` with a backoff;
permanent ones, and transient ones out of tries or time, are recorded as failed on every waiting event.
Every log line of a job carries its event id(s), route, document and invoice code (structlog context
variables, bound per job: arq runs each job in its own asyncio task, so they never leak to another).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import structlog
from arq import Retry
from arq.worker import func

from tasks import credits
from tasks.client import ApiClient, api_session
from tasks.errors import ApiError, BannedError, RateLimited, TransientError
from tasks.hooks import read_hook
from tasks.sync import SyncResult, sync_invoice
from worker import keys
from worker.config import Settings
from worker.documents import Claim, Documents
from worker.handover import track_job, untrack_job
from worker.heartbeat import SYNCS_FAILED, SyncTally
from worker.idmap import RedisIdMap
from worker.metrics import (
    EVENTS_SETTLED,
    JOBS,
    SYNC_RETRIES,
    SYNC_SECONDS,
    SYNCS,
    observe_api_call,
    observe_limit,
)
from worker.queue import FAN_OUT, SYNC, arq_redis, job_deserializer, job_serializer
from worker.ratelimit import Limit, SharedRateLimit, bulk_calls, publish_limits
from worker.redisio import done as redis_done
from worker.retry import backoff, give_up_reason
from worker.store import FINAL, SYNTHETIC, EventStore

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Bind ``values`` to every log line until the block ends, and whatever the block binds on top of them.

    arq runs each job in a task of its own, so the context is the job's; restoring it on the way out keeps
    a job run directly (tests, the sandbox) from leaking its ids into the caller's lines.
    """
    saved = structlog.contextvars.get_contextvars()
    structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**saved)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    redis = ctx["redis"]
    ctx["store"] = EventStore.for_settings(redis, settings)
    ctx[SYNCS_FAILED] = SyncTally()
    ctx["documents"] = Documents(
        redis,
        lease_ms=settings.lease_ms,
        job_expiry_ms=settings.job_expiry_ms,
        owner=ctx.get("worker_id", "-"),
        renew_every=settings.heartbeat_seconds,
    )
    sources = [settings.source(name) for name in settings.sources]
    targets = [settings.target(name) for name in settings.targets]
    limits = {a.name: Limit("source", a.rate_limit_per_minute) for a in sources}
    limits |= {a.name: Limit("target", a.rate_limit_per_minute) for a in targets}
    await publish_limits(redis, limits)
    admins = sources + targets
    throttle = SharedRateLimit(
        redis, {name: limit.per_minute for name, limit in limits.items()}, on_event=observe_limit
    )
    ctx["throttle"] = throttle
    session = api_session()
    ctx["session"] = session
    ctx["clients"] = {
        admin.name: ApiClient(admin, session=session, throttle=throttle, on_call=observe_api_call)
        for admin in admins
    }


async def shutdown(ctx: dict[str, Any]) -> None:
    session = ctx.get("session")
    if session is not None:
        await session.close()


async def fan_out(ctx: dict[str, Any], event_id: str) -> str:
    """Queue the sync of the event's document on every route of its source."""
    with log_context(event_ids=[event_id]):
        try:
            result, message = await _fan_out(ctx, event_id)
        except asyncio.CancelledError:
            JOBS.labels(FAN_OUT, "cancelled").inc()
            raise
        except Exception:
            JOBS.labels(FAN_OUT, "error").inc()
            raise
    JOBS.labels(FAN_OUT, result).inc()
    return message


async def _fan_out(ctx: dict[str, Any], event_id: str) -> tuple[str, str]:
    """(result for the metrics, message for arq's log)."""
    settings: Settings = ctx["settings"]
    store: EventStore = ctx["store"]
    event = await store.get(event_id)
    if event is None:
        return "skipped", "event gone"
    if event.status not in ("queued", "running"):
        return "skipped", f"event already {event.status}"
    structlog.contextvars.bind_contextvars(source=event.source, action=event.action)
    documents: Documents = ctx["documents"]
    if event.action in SYNTHETIC:
        # Recorded by a backfill or an audit (and now re-enqueued): no hook to parse; its own routes and
        # invoice say what to sync.
        routes = [settings.route(name) for name in event.routes if name in settings.routes]
        document = str(event.payload.get("id", ""))
        if not routes or not document:
            await store.set_status(event_id, "ignored", reason="its routes are no longer configured")
            EVENTS_SETTLED.labels("ignored").inc()
            return "ignored", "ignored: no route"
        await store.start(event_id, [route.name for route in routes])
        for route in routes:
            ids = RedisIdMap(ctx["redis"], route.name)
            await documents.schedule(route.name, await credits.document_of(ids, document), event_id)
        return "fanned_out", f"fanned out to {len(routes)} route(s)"
    reading = read_hook(event.action, event.payload)
    if reading is None:
        await store.set_status(event_id, "ignored", reason=f"factsync does not act on {event.action!r}")
        EVENTS_SETTLED.labels("ignored").inc()
        return "ignored", "ignored"
    hook = reading.hook
    if hook is None:
        await store.set_status(
            event_id, "failed", reason=f"the hook names no usable invoice: {reading.unusable}"
        )
        EVENTS_SETTLED.labels("failed").inc()
        return "failed", "no usable invoice"
    routes = settings.routes_of(event.source)
    if not routes:
        await store.set_status(event_id, "ignored", reason=f"no route has source {event.source!r}")
        EVENTS_SETTLED.labels("ignored").inc()
        return "ignored", "ignored: no route"
    await store.start(event_id, [route.name for route in routes])
    for route in routes:
        ids = RedisIdMap(ctx["redis"], route.name)
        # The links between an original and its credit invoices that HostFact's API does not show.
        await credits.remember(ids, hook)
        await documents.schedule(route.name, await credits.document_of(ids, str(hook.document_id)), event_id)
    return "fanned_out", f"fanned out to {len(routes)} route(s)"


async def sync_document(ctx: dict[str, Any], route_name: str, document: str) -> str:
    """Bring one document of one route in step, answering for every event waiting on it."""
    with log_context(route=route_name, document=document):
        try:
            result, message = await _sync_document(ctx, route_name, document)
        except Retry:
            JOBS.labels(SYNC, "retry").inc()
            raise
        except asyncio.CancelledError:
            JOBS.labels(SYNC, "cancelled").inc()
            raise
        except Exception:
            JOBS.labels(SYNC, "error").inc()
            raise
    JOBS.labels(SYNC, result).inc()
    return message


async def _sync_document(ctx: dict[str, Any], route_name: str, document: str) -> tuple[str, str]:
    documents: Documents = ctx["documents"]
    claim = await documents.claim(route_name, document, ctx["job_id"])
    if claim is None:
        return (
            "stood_down",
            "another job holds this document; one more sync runs when it is done (or its lease runs out)",
        )
    done: list[str] = []
    retrying = ""
    try:
        # Inside the try: the lease is given back whatever happens from here on.
        structlog.contextvars.bind_contextvars(
            event_ids=claim.event_ids, invoice_code=await _invoice_code(ctx["redis"], claim.event_ids)
        )
        if claim.event_ids:
            async with documents.kept_alive(claim):
                done = await _sync_claimed(ctx, claim)
    except (Retry, asyncio.CancelledError):
        # arq runs this very job again: after the backoff, or (cancelled by a shutdown) on another worker.
        retrying = ctx["job_id"]
        raise
    finally:
        follow_up = await documents.release(claim, done, retrying=retrying)
    if follow_up:
        log.info("sync.follow_up", job_id=follow_up)
    return ("synced" if done else "idle"), f"answered {len(done)} event(s)"


async def _invoice_code(redis: Any, event_ids: list[str]) -> str | None:
    """The invoice code the newest of the events names (the hook's InvoiceCode), for the log context."""
    if not event_ids:
        return None
    # Event ids sort by arrival; a draft's code changes when it gets its number, so the newest says most.
    raw = await redis_done(redis.hget(keys.event(max(event_ids)), "payload"))
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        return None
    code = payload.get("InvoiceCode") if isinstance(payload, dict) else None
    return str(code) if code not in (None, "") else None


async def _sync_claimed(ctx: dict[str, Any], claim: Claim) -> list[str]:
    settings: Settings = ctx["settings"]
    store: EventStore = ctx["store"]
    attempt: int = ctx["job_try"]
    for event_id in claim.event_ids:
        await store.record_try(event_id, attempt)
    started = time.monotonic()
    outcome: dict[str, Any]
    # The sync writes the calls it makes here, so a failed try records them too.
    calls: list[str] = []
    try:
        if claim.route not in settings.routes:
            raise LookupError(f"route {claim.route!r} is no longer configured")
        route = settings.route(claim.route)
        clients: dict[str, ApiClient] = ctx["clients"]
        try:
            # Within arq's job timeout, so that a slow sync is retried here, with its outcome recorded,
            # rather than killed by arq, which would drop the job and leave its events running forever.
            bulk = await store.only_synthetic(claim.event_ids)  # a backfill's: the hooks' go first
            async with asyncio.timeout(settings.sync_budget), bulk_calls(bulk):
                result: SyncResult = await sync_invoice(
                    route,
                    claim.document,
                    source=clients[route.source],
                    target=clients[route.target],
                    ids=RedisIdMap(ctx["redis"], route.name),
                    calls=calls,
                )
        except TimeoutError:
            raise TransientError(f"the sync took longer than {settings.sync_budget:.0f} s") from None
        outcome = {
            "status": result.status,
            "detail": result.detail,
            "calls": result.calls,
            "tries": attempt,
        }
        if route.dry_run:
            outcome["planned"] = result.planned
    except TransientError as exc:
        elapsed = time.time() - ctx["enqueue_time"].timestamp()
        delay = exc.retry_after if isinstance(exc, RateLimited) else backoff(attempt, settings.retry)
        reason = give_up_reason(attempt, elapsed, delay, settings.retry)
        if reason is None:
            log.info("sync.retry", attempt=attempt, delay=delay, error=exc.message)
            kind = "rate_limited" if isinstance(exc, RateLimited) else "transient"
            SYNC_RETRIES.labels(claim.route, kind).inc()
            waiting = "budget spent or a ban pause" if isinstance(exc, RateLimited) else "retry backoff"
            entry = _attempt(claim.route, attempt, "retry", started, calls, exc.message)
            entry["until"] = time.time() + delay
            for event_id in claim.event_ids:
                await store.record_attempt(event_id, entry, waiting=waiting)
            raise Retry(defer=delay) from exc
        outcome = _failed(f"{reason}: {exc.message}", exc, attempt, calls)
    except BannedError as exc:
        banned = str(exc.exchange.get("administration", ""))
        if banned:
            await ctx["throttle"].pause(banned, settings.ban_pause)
        log.error("api.banned", administration=banned, pause_s=settings.ban_pause)
        outcome = _failed(
            f"the target banned this IP (HTTP 403), not retried: {exc.message}", exc, attempt, calls
        )
    except ApiError as exc:
        outcome = _failed(f"the API refused: {exc.message}", exc, attempt, calls)
    except Exception as exc:
        log.exception("sync.crashed")
        outcome = _failed(f"internal error: {type(exc).__name__}: {exc}", None, attempt, calls)
    elapsed = time.monotonic() - started
    outcome["elapsed_ms"] = round(elapsed * 1000)
    note = outcome.get("reason") or outcome.get("detail") or ""
    entry = _attempt(claim.route, attempt, outcome["status"], started, outcome.get("calls") or calls, note)
    SYNCS.labels(claim.route, outcome["status"]).inc()
    SYNC_SECONDS.labels(claim.route).observe(elapsed)
    # Logged and counted before the events settle: whoever finds an event settled finds these too.
    if outcome["status"] == "failed":
        # Counted where it happened (the worker's heartbeat): arq sees a handled failure as a job done.
        ctx[SYNCS_FAILED].failed += 1
        # A failure needs a person: at WARNING, with its reason, so it shows where INFO is filtered out.
        log.warning("sync.failed", reason=outcome.get("reason", ""), events=len(claim.event_ids))
    else:
        log.info("sync.finished", status=outcome["status"], events=len(claim.event_ids))
    for event_id in claim.event_ids:
        await store.record_attempt(event_id, entry)
        settled = await store.record_outcome(event_id, claim.route, outcome)
        if settled in FINAL:
            EVENTS_SETTLED.labels(settled).inc()
    return claim.event_ids


def _attempt(
    route: str, attempt: int, outcome: str, started: float, calls: list[str], note: str
) -> dict[str, Any]:
    """One line of an event's timeline of tries."""
    return {
        "at": round(time.time(), 3),
        "route": route,
        "try": attempt,
        "outcome": outcome,
        "ms": round((time.monotonic() - started) * 1000),
        "calls": list(calls),
        "note": note[:500],
    }


def _failed(reason: str, exc: ApiError | None, attempt: int, calls: list[str]) -> dict[str, Any]:
    exchange = exc.exchange if exc else None
    return {"status": "failed", "reason": reason, "exchange": exchange, "tries": attempt, "calls": calls}


def worker_settings(settings: Settings, redis_url: str, worker_id: str) -> dict[str, Any]:
    """arq `Worker` keyword arguments: ``arq.worker.Worker(**worker_settings(settings, url, worker_id))``;
    ``worker_id`` is the one its heartbeat beats under."""
    # arq's own try limit is only a backstop; the retry policy above decides, and records, giving up.
    backstop = settings.retry.max_tries + 50
    return {
        "functions": [
            # Short: arq re-runs a killed worker's jobs only after the longest function timeout + 10 s.
            func(fan_out, name=FAN_OUT, timeout=min(30, settings.job_timeout), max_tries=backstop),
            func(sync_document, name=SYNC, timeout=settings.job_timeout, max_tries=backstop),
        ],
        "redis_pool": arq_redis(redis_url, retry_for=settings.redis_reconnect_seconds),
        "queue_name": keys.QUEUE,
        "poll_delay": settings.poll_delay,
        "max_jobs": settings.max_jobs,
        "job_timeout": settings.job_timeout,
        "keep_result": 0,
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
        "on_startup": startup,
        "on_shutdown": shutdown,
        # What the worker holds, for a live worker to hand on should this one die (worker.handover).
        "on_job_start": track_job,
        "after_job_end": untrack_job,
        "ctx": {"settings": settings, "worker_id": worker_id},
        # On SIGTERM stop taking jobs and let running ones finish; what is still running after the grace
        # period is cancelled and stays queued, so another worker runs it again.
        "job_completion_wait": int(settings.shutdown_grace),
        "health_check_key": keys.health_check(),
        "health_check_interval": 10,
    }
