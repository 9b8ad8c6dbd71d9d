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

from collections.abc import Iterable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from tasks.client import ApiCall
from worker.config import Settings
from worker.ratelimit import LimitEvent

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


# -- serving -------------------------------------------------------------------------------------------


def render(extra: Iterable[Metric] = ()) -> bytes:
    """This process's metrics in the Prometheus text format, followed by ``extra`` families."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_Families(extra))
    return generate_latest(REGISTRY) + generate_latest(scrape)


class _Families(Collector):
    """Hands ready-made metric families to a registry: what was read from Redis for this one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def _own_metrics(request: web.Request) -> web.Response:
    return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_worker_metrics(settings: Settings) -> web.AppRunner | None:
    """Serve a worker process's own metrics on ``listen_host:worker_metrics_port``; None when off."""
    if not settings.metrics or not settings.worker_metrics_port:
        return None
    app = web.Application()
    app.router.add_get("/metrics", _own_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.listen_host, settings.worker_metrics_port).start()
    log.info("metrics.started", host=settings.listen_host, port=settings.worker_metrics_port)
    return runner
