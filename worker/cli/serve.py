"""The daemons (`run`, `listen`, `worker`), `remap` and the `sandbox`: the commands that start things."""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
from pathlib import Path

import click

from tasks.client import ApiClient
from tasks.errors import ApiError, RateLimited
from tasks.remap import rebuild_id_map
from worker import redisio
from worker.cli.context import load_settings_for
from worker.cli.sandbox import run_sandbox
from worker.config import Settings
from worker.embedded_redis import running_redis_url
from worker.idmap import RedisIdMap
from worker.logs import configure_logging
from worker.ratelimit import SharedRateLimit
from worker.runtime import redis_for, serve
from worker.supervisor import Supervisor
from worker.web.app import create_app


def _run(settings: Settings, *, listen: bool, work: bool) -> None:
    try:
        with redis_for(settings) as redis_url:
            healthy = asyncio.run(serve(settings, redis_url, app=create_app if listen else None, work=work))
        if not healthy:
            raise click.ClickException(
                "the other workers judged this one dead (no heartbeat for five beats: it was frozen or cut "
                "off from Redis) and handed its jobs on; exiting so that a fresh process takes its place"
            )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # One line, not a traceback: the operator's next step is another port or stopping the other process.
        raise click.ClickException(
            f"cannot listen on {settings.listen_host}:{settings.listen_port}: the address is in use "
            "(another factsync or program holds it); choose another with --port or listen_port"
        ) from None


_host = click.option("--host", help="Listen on this address (default from config: 127.0.0.1).")
_port = click.option("--port", type=int, help="Listen on this port (default from config: 8080).")


@click.command()
@_host
@_port
@click.pass_context
def run(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the listener and a worker in one process (small installations).

    Without a Redis URL (FACTSYNC_REDIS_URL or redis_url in the config) an embedded Redis server is
    started with its append-only file under data_dir.
    """
    _run(load_settings_for(ctx, listen_host=host, listen_port=port), listen=True, work=True)


@click.command()
@_host
@_port
@click.pass_context
def listen(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run only the listener: POST /hooks/{source}, GET /healthz, GET /readyz."""
    _run(load_settings_for(ctx, listen_host=host, listen_port=port), listen=True, work=False)


# How much longer than shutdown_grace the supervisor waits for its children: start-up, closing, logging.
STOP_MARGIN = 10.0


@click.command()
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(min=1),
    help="Worker processes to run and keep running (default from config: worker_processes, 1).",
)
@click.pass_context
def worker(ctx: click.Context, processes: int | None) -> None:
    """Run worker processes; start as many as the load needs, on any host that reaches Redis.

    With --processes N above 1, a supervisor runs N worker processes and restarts one that dies (after a
    backoff that grows while it keeps dying). SIGTERM stops them gracefully: no new job is taken, running
    ones finish within shutdown_grace seconds, and the rest stay queued for another worker.
    """
    settings = load_settings_for(ctx)
    if not settings.redis_url:
        raise click.ClickException(
            "a separate worker needs a shared Redis: set FACTSYNC_REDIS_URL or redis_url "
            "(use `factsync run` for the embedded single-process setup)"
        )
    processes = processes or settings.worker_processes
    if processes == 1:
        _run(settings, listen=False, work=True)
        return
    command = [sys.executable, "-m", "worker.cli", *_global_options(ctx), "worker", "--processes", "1"]
    supervisor = Supervisor(
        command,
        processes,
        stop_timeout=settings.shutdown_grace + STOP_MARGIN,
        metrics_port=settings.worker_metrics_port if settings.metrics else 0,
    )
    sys.exit(asyncio.run(supervisor.run()))


def _global_options(ctx: click.Context) -> list[str]:
    """The `factsync` options this command was given, for a child process that must see the same."""
    options = ["--log-level", ctx.obj["log_level"]]
    if ctx.obj["config"] is not None:
        options += ["--config", str(Path(ctx.obj["config"]).resolve())]
    if ctx.obj["log_json"] is not None:
        options.append("--log-json" if ctx.obj["log_json"] else "--log-text")
    return options


@click.command()
@click.option("--route", "route_name", required=True, help="The route whose mapping to rebuild.")
@click.pass_context
def remap(ctx: click.Context, route_name: str) -> None:
    """Rebuild a route's id mapping (source document -> mirror) from the markers in its target.

    Every mirror carries "[factsync:SOURCE:ID]" in its ReferenceNumber, so the mapping in Redis can be
    rebuilt after Redis lost it. Safe to run at any time; it only reads the target and writes the mapping.
    """
    settings = load_settings_for(ctx)
    if route_name not in settings.routes:
        known = ", ".join(sorted(settings.routes)) or "none"
        raise click.ClickException(f"no route named {route_name!r} (configured: {known})")
    try:
        redis_url = running_redis_url(settings.redis_url, settings.data_dir)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        mapped = asyncio.run(_remap(settings, route_name, redis_url))
    except RateLimited as exc:
        # A ban pause (or a spent budget) on the target: nothing to do but wait; say how long.
        raise click.ClickException(
            f"route {route_name}: {exc.message}; try again in {exc.retry_after:.0f} s (what was read "
            "before is mapped; remap again)"
        ) from None
    except ApiError as exc:
        raise click.ClickException(
            f"route {route_name}: {exc.message} (what was read before is mapped; remap again)"
        ) from None
    click.echo(f"route {route_name}: {mapped} mirror(s) mapped from their markers")


async def _remap(settings: Settings, route_name: str, redis_url: str) -> int:
    route = settings.route(route_name)
    redis = redisio.connect(redis_url, retry_for=redisio.COMMAND_RETRY_FOR)
    try:
        throttle = SharedRateLimit(
            redis, {route.target: settings.targets[route.target].rate_limit_per_minute}
        )
        async with ApiClient(settings.target(route.target), throttle=throttle) as target:
            with click.progressbar(length=1, label=f"reading {route.target}", file=sys.stderr) as bar:

                def progress(done: int, total: int) -> None:
                    bar.length = total
                    bar.update(done - bar.pos)

                return await rebuild_id_map(route, target, RedisIdMap(redis, route.name), progress=progress)
    finally:
        await redis.aclose()


@click.command()
@click.option("--port", type=int, default=8080, show_default=True, help="The listener's port (0: any free).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/sandbox"),
    show_default=True,
    help="Where the embedded Redis keeps its files.",
)
@click.option(
    "--demo/--no-demo",
    default=True,
    show_default=True,
    help="Create, send and pay an invoice in the simulated HostFact and show what factsync did.",
)
@click.option("--exit-after-demo", is_flag=True, help="Stop after the demo instead of serving until Ctrl-C.")
@click.pass_context
def sandbox(ctx: click.Context, port: int, data_dir: Path, demo: bool, exit_after_demo: bool) -> None:
    """Everything embedded: Redis, a simulated HostFact (source) and WeFact (target), listener and worker.

    Acting on the simulated HostFact through its API fires its hooks at the listener, as a real HostFact
    with hooks.php would; the addresses are printed at start.
    """
    configure_logging(json=ctx.obj["log_json"], level=ctx.obj["log_level"])
    if ctx.obj["log_level"] != "DEBUG":
        # arq logs a line per job start and end; in the sandbox that buries the demo's own output.
        logging.getLogger("arq").setLevel(logging.WARNING)
    try:
        code = asyncio.run(
            run_sandbox(port=port, data_dir=data_dir, demo=demo, exit_after_demo=exit_after_demo)
        )
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
