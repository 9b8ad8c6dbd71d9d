"""The listener's metrics: /metrics with what only Redis knows, and the count of every hook answered."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric
from redis.asyncio import Redis

from worker import keys
from worker.config import Settings
from worker.heartbeat import heartbeats
from worker.metrics import (
    EVENTS_SETTLED,
    HOOKS_ACCEPTED,
    HOOKS_RECEIVED,
    HOOKS_REJECTED,
    UNKNOWN_SOURCE,
    render,
)
from worker.store import STATUSES
from worker.web.appkeys import REDIS

log = structlog.get_logger(__name__)


def count_hook(source: str | None, response: web.Response | None) -> None:
    """Count one hook delivery from the listener's answer; ``source`` None: not configured; ``response``
    None: the handler failed (the client gets a 500 and sends the hook again)."""
    label = source if source is not None else UNKNOWN_SOURCE
    HOOKS_RECEIVED.labels(label).inc()
    if response is None:
        HOOKS_REJECTED.labels(label, "internal").inc()
        return
    # The listener's answers are small JSON objects; their `error` code is a fixed set, fit for a label.
    try:
        answer = json.loads(response.body) if isinstance(response.body, bytes) else {}
    except ValueError:
        answer = {}
    if response.status < 300:
        result = "duplicate" if answer.get("duplicate") else str(answer.get("status", "queued"))
        HOOKS_ACCEPTED.labels(label, result).inc()
        if result in ("ignored", "failed"):
            EVENTS_SETTLED.labels(result).inc()
    else:
        HOOKS_REJECTED.labels(label, str(answer.get("error", f"http_{response.status}"))).inc()


async def redis_families(redis: Redis, settings: Settings) -> list[Metric]:
    """What only Redis knows, read now: queue depth, events per status, paused administrations, workers."""
    up = GaugeMetricFamily("factsync_redis_up", "1 when Redis answered this scrape.")
    try:
        now_ms = int(time.time() * 1000)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.QUEUE)
            pipe.zcount(keys.QUEUE, f"({now_ms}", "+inf")
            statuses = STATUSES
            for status in statuses:
                pipe.zcard(keys.by_status(status))
            admins = sorted({*settings.sources, *settings.targets})
            for admin in admins:
                pipe.pttl(keys.paused(admin))
            results = await pipe.execute()
        workers = [beat for beat in await heartbeats(redis) if beat.fresh]
    except Exception as exc:  # Redis away: say so, and still serve the process's own counters
        log.warning("metrics.redis_unreachable", error=type(exc).__name__)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    depth = GaugeMetricFamily("factsync_queue_depth", "Jobs in the queue, deferred retries included.")
    depth.add_metric([], results[0])
    deferred = GaugeMetricFamily(
        "factsync_queue_deferred", "Jobs in the queue that wait for a later time (retry backoffs)."
    )
    deferred.add_metric([], results[1])
    events = GaugeMetricFamily(
        "factsync_events", "Events per status now; status=failed is the failed store.", labels=["status"]
    )
    for status, count in zip(statuses, results[2 : 2 + len(statuses)], strict=True):
        events.add_metric([status], count)
    paused = GaugeMetricFamily(
        "factsync_administration_paused_seconds",
        "Seconds left of the pause of every call to an administration after a ban (0: not paused).",
        labels=["administration"],
    )
    for admin, pttl in zip(admins, results[2 + len(statuses) :], strict=True):
        paused.add_metric([admin], max(0, int(pttl)) / 1000)
    fresh = GaugeMetricFamily("factsync_workers", "Worker processes with a fresh heartbeat.")
    fresh.add_metric([], len(workers))
    return [up, depth, deferred, events, paused, fresh]


def metrics_handler(
    redis_of: Callable[[web.Application], Redis | None], settings: Settings
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        redis = redis_of(request.app)
        extra = await redis_families(redis, settings) if redis is not None else []
        return web.Response(body=render(extra), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


def setup_metrics(app: web.Application, settings: Settings) -> None:
    """Serve /metrics on the listener's application when metrics are on."""
    if not settings.metrics:
        return

    app.router.add_get("/metrics", metrics_handler(lambda app: app.get(REDIS), settings))
