"""Prometheus metrics: every metric factsync exports is defined here, and served at /metrics.

The listener serves /metrics on its own port. Its process's counters (hooks) plus what only Redis knows
(queue depth, events per status, paused administrations, fresh workers), read at scrape time, so any one
listener reports the same fleet-wide numbers.

Workers are other processes, often on other hosts or in other containers, so they cannot share the
listener's registry. Each worker process serves its own counters (jobs, syncs, API calls, rate limit) on
`worker_metrics_port` (0 = off); `factsync worker --processes N` gives its N processes the ports
`worker_metrics_port` .. `worker_metrics_port + N - 1`. (prometheus_client's multiprocess mode was not
used: it only aggregates processes that share a directory on one host, which separate containers and pods
do not.) `factsync run`, the listener and a worker in one process, serves everything on the listener.

Labels carry only names from the configuration (source, route, administration), names from the code
(controller, action, reason, outcome) or fixed sets: never an event id, an invoice code, a URL or a key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from redis.asyncio import Redis

from tasks.client import ApiCall
from worker import keys
from worker.config import Settings
from worker.heartbeat import heartbeats
from worker.ratelimit import LimitEvent
from worker.store import STATUSES

log = structlog.get_logger(__name__)

# -- the listener --------------------------------------------------------------------------------------------

HOOKS_RECEIVED = Counter("factsync_hooks_received", "Hook deliveries posted to /hooks/{source}.", ["source"])
HOOKS_ACCEPTED = Counter(
    "factsync_hooks_accepted",
    "Hooks answered 2xx, by result: queued, ignored (recorded, nothing to do) or duplicate "
    "(a webhook-id already accepted).",
    ["source", "result"],
)
HOOKS_REJECTED = Counter(
    "factsync_hooks_rejected",
    "Hooks refused, by reason (the error code of the answer: bad_signature, invalid, too_large...).",
    ["source", "reason"],
)
# A source name comes from the URL: anything not configured is counted under this one value.
UNKNOWN_SOURCE = "(unknown)"

# -- events and jobs (workers; the listener counts the events it records as ignored) ------------------------

EVENTS_SETTLED = Counter(
    "factsync_events_settled",
    "Events that reached a final status: done, ignored or failed (into the failed store).",
    ["status"],
)
JOBS = Counter(
    "factsync_jobs",
    "arq job runs by function (fan_out, sync_document) and result.",
    ["function", "result"],
)
SYNCS = Counter(
    "factsync_syncs", "Syncs of one document on one route, by the outcome recorded.", ["route", "status"]
)
SYNC_RETRIES = Counter(
    "factsync_sync_retries",
    "Syncs put back in the queue with a backoff, by kind: transient or rate_limited.",
    ["route", "kind"],
)
SYNC_SECONDS = Histogram(
    "factsync_sync_duration_seconds",
    "How long one sync of a document took, retries not included.",
    ["route"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

# -- the APIs ------------------------------------------------------------------------------------------

API_CALLS = Counter(
    "factsync_api_calls",
    "API calls sent, by administration, controller, action and outcome "
    "(success, error, transient, rate_limited, banned).",
    ["administration", "controller", "action", "outcome"],
)
API_SECONDS = Histogram(
    "factsync_api_call_duration_seconds",
    "API call latency (the HTTP exchange; time waiting for the rate limit not included).",
    ["administration", "controller", "action"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RATE_LIMIT_WAITS = Counter(
    "factsync_ratelimit_waits", "Times a call waited for the shared rate limit.", ["administration"]
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "factsync_ratelimit_wait_seconds",
    "Seconds calls spent waiting for the shared rate limit.",
    ["administration"],
)
RATE_LIMIT_REFUSALS = Counter(
    "factsync_ratelimit_refusals",
    "Calls not sent: the budget was spent (budget), or the administration is paused after a ban (paused).",
    ["administration", "reason"],
)
BANS = Counter(
    "factsync_api_bans",
    "HTTP 403 bans (WeFact's IP firewall) that paused every call to an administration.",
    ["administration"],
)


def observe_limit(event: LimitEvent) -> None:
    """`SharedRateLimit(on_event=...)`: count a wait, a refusal or a ban."""
    if event.kind == "wait":
        RATE_LIMIT_WAITS.labels(event.administration).inc()
        RATE_LIMIT_WAIT_SECONDS.labels(event.administration).inc(event.seconds)
    elif event.kind == "ban":
        BANS.labels(event.administration).inc()
    else:
        RATE_LIMIT_REFUSALS.labels(event.administration, event.kind).inc()


def observe_api_call(call: ApiCall) -> None:
    """`ApiClient(on_call=...)`: count one API call and its latency."""
    API_CALLS.labels(call.administration, call.controller, call.action, call.outcome).inc()
    API_SECONDS.labels(call.administration, call.controller, call.action).observe(call.elapsed)


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
        if result == "ignored":
            EVENTS_SETTLED.labels("ignored").inc()
    else:
        HOOKS_REJECTED.labels(label, str(answer.get("error", f"http_{response.status}"))).inc()


# -- serving -------------------------------------------------------------------------------------------


class _Families(Collector):
    """Hands ready-made metric families to a registry: what was read from Redis for this one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


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


def render(extra: Iterable[Metric] = ()) -> bytes:
    """This process's metrics in the Prometheus text format, followed by ``extra`` families."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_Families(extra))
    return generate_latest(REGISTRY) + generate_latest(scrape)


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

    def listener_redis(app: web.Application) -> Redis | None:
        # Imported here: the listener imports this module to mount /metrics.
        from worker.listener import REDIS

        return app.get(REDIS)

    app.router.add_get("/metrics", metrics_handler(listener_redis, settings))


async def start_worker_metrics(settings: Settings) -> web.AppRunner | None:
    """Serve a worker process's own metrics on ``listen_host:worker_metrics_port``; None when off."""
    if not settings.metrics or not settings.worker_metrics_port:
        return None
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(lambda app: None, settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.listen_host, settings.worker_metrics_port).start()
    log.info("metrics.started", host=settings.listen_host, port=settings.worker_metrics_port)
    return runner
