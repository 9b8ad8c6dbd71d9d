"""The listener's application: the hook endpoint, health, metrics and the dashboard, and its Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from worker import redisio
from worker.config import Settings
from worker.signing import HookVerifier
from worker.store import EventStore
from worker.web.appkeys import REDIS, SETTINGS, STORE, VERIFIERS
from worker.web.dashboard import setup_dashboard
from worker.web.hooks import error, receive_hook
from worker.web.metrics import setup_metrics

log = structlog.get_logger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[REDIS].ping()
    except Exception as exc:
        return error(503, "redis_unreachable", f"Redis does not answer: {type(exc).__name__}")
    return web.json_response({"status": "ready"})


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every refusal is JSON, including aiohttp's own 404/405/413."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
    except Exception:
        log.exception("listener.error", path=request.path)
        return error(500, "internal", "internal error; the hook was not accepted, send it again")


def create_app(settings: Settings, redis_url: str) -> web.Application:
    """The listener application; Redis is opened on start-up and closed on clean-up."""
    # aiohttp refuses bodies over client_max_size itself; a margin lets the handler answer 413 in JSON.
    app = web.Application(middlewares=[json_errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[VERIFIERS] = {
        name: HookVerifier(
            [secret.get_secret_value() for secret in source.hook_secrets],
            tolerance=settings.timestamp_tolerance,
        )
        for name, source in settings.sources.items()
    }

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        redis = redisio.connect(
            redis_url,
            retry_for=redisio.LISTENER_RETRY_FOR,
            connect_timeout=redisio.LISTENER_CONNECT_TIMEOUT,
        )
        app[REDIS] = redis
        app[STORE] = EventStore.for_settings(redis, settings)
        yield
        await redis.aclose()

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_post("/hooks/{source}", receive_hook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    setup_metrics(app, settings)
    setup_dashboard(app, settings)
    return app
