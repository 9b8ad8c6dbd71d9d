"""`factsync check`: the health check, kept light (the Redis settings, Redis, heartbeats) for a probe every
30 s."""

from __future__ import annotations

import asyncio
import socket
import sys

import click

from worker import redisio
from worker.cli.reach import find_redis
from worker.heartbeat import heartbeats, verdict


@click.command()
@click.option(
    "--this-host",
    is_flag=True,
    help="Count only the workers on this host: a container's or pod's own health check.",
)
@click.pass_context
def check(ctx: click.Context, this_host: bool) -> None:
    """Exit 0 when a worker's heartbeat is fresh, 1 when none is; print one line saying why.

    For health checks: `factsync check --this-host` in a worker container or pod, `factsync check` to
    know that some worker, anywhere, is alive.
    """
    try:
        url = find_redis(ctx)
    except LookupError as exc:
        click.echo(f"unhealthy: {exc}")
        sys.exit(1)
    healthy, reason = asyncio.run(_check(url, socket.gethostname() if this_host else None))
    click.echo(("ok: " if healthy else "unhealthy: ") + reason)
    sys.exit(0 if healthy else 1)


async def _check(redis_url: str, host: str | None) -> tuple[bool, str]:
    redis = redisio.connect(redis_url, retry_for=0, connect_timeout=3, timeout=3)
    try:
        beats = await heartbeats(redis)
    except Exception as exc:
        # Not the URL: it may carry Redis's password.
        return False, f"Redis does not answer ({type(exc).__name__})"
    finally:
        await redis.aclose()
    return verdict(beats, host=host)
