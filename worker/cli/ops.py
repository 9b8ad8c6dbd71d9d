"""The commands that re-enqueue or discard events: `events replay`, `failed retry`, `failed discard`.

They write jobs, so they read the whole configuration (the retry span sets a job's expiry); the `events`
and `failed` groups and their looks live in `worker.cli.look` and load these when run. The queries and
actions live in `worker.operate` (the dashboard uses them too).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict

import click
from redis.asyncio import Redis

from worker import operate, redisio
from worker.cli.context import load_settings_for
from worker.cli.output import (
    ATTENTION,
    PROGRESS_FROM,
    WHEN,
    ProgressReport,
    echo_json,
    json_option,
    run_or_fail,
)
from worker.config import Settings
from worker.embedded_redis import running_redis_url
from worker.store import EventStore


def settings_and_url(ctx: click.Context, *, secrets: bool = False) -> tuple[Settings, str]:
    """The settings and the Redis to talk to. Reading and re-enqueuing events needs only Redis; a command
    that calls the APIs (backfill, audit) asks for the ``secrets`` too."""
    settings = load_settings_for(ctx, secrets=secrets)
    try:
        return settings, running_redis_url(settings.redis_url, settings.data_dir)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None


@contextlib.asynccontextmanager
async def connected(settings: Settings, url: str) -> AsyncIterator[tuple[Redis, EventStore]]:
    redis = redisio.connect(url, retry_for=redisio.COMMAND_RETRY_FOR)
    try:
        yield redis, EventStore.for_settings(redis, settings)
    finally:
        await redis.aclose()


def _print_requeues(results: list[operate.Requeue], as_json: bool) -> None:
    if as_json:
        echo_json([asdict(result) for result in results])
    else:
        for result in results:
            click.echo(f"{result.event_id}  {result.detail}")
        done = sum(1 for result in results if result.verdict in ("requeued", "hurried"))
        waiting = sum(1 for result in results if result.verdict == "waiting")
        click.echo(
            f"{done} re-enqueued, {waiting} already waiting, {len(results) - done - waiting} not touched"
        )
    if any(result.verdict in ("missing", "refused") for result in results):
        sys.exit(ATTENTION)


def _requeue(
    ctx: click.Context, event_ids: Sequence[str], allowed: frozenset[str], as_json: bool, *, now: bool = False
) -> None:
    settings, url = settings_and_url(ctx)
    by = operate.operator()

    async def work() -> list[operate.Requeue]:
        async with connected(settings, url) as (_, store):
            with ProgressReport("re-enqueueing", minimum=PROGRESS_FROM) as progress:
                return await operate.requeue_events(
                    store, event_ids, by=by, allowed=allowed, progress=progress, now=now
                )

    _print_requeues(run_or_fail(url, work()), as_json)


# -- commands ------------------------------------------------------------------------------------------------


@click.command("replay")
@click.argument("event_ids", nargs=-1, required=True)
@json_option
@click.pass_context
def events_replay(ctx: click.Context, event_ids: tuple[str, ...], as_json: bool) -> None:
    """Run finished events again (done, ignored, failed or discarded).

    Safe: a sync reads the invoice's current state and only changes what differs. An event that is still
    queued or running is left alone. The re-enqueue is noted in the event's history with who did it
    ($FACTSYNC_OPERATOR, else user@host).

    \b
    Example:
      factsync events replay evt_0635c8e1d2a3f9b1c2d3e4f5a6 evt_0635c8e1d2b40c7d8e9f0a1b2c
    """
    _requeue(ctx, event_ids, operate.REPLAYABLE, as_json)


@click.command("retry")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every failed event (discarded ones are not failed).")
@click.option("--action", help="Every failed event of this action.")
@click.option("--since", **WHEN, help="Every failed event received since this time: 2026-01-31, 2h, 3d.")
@click.option("--now", is_flag=True, help="An event waiting out a retry backoff: run its sync at once.")
@json_option
@click.pass_context
def failed_retry(
    ctx: click.Context,
    event_ids: tuple[str, ...],
    every: bool,
    action: str | None,
    since: float | None,
    now: bool,
    as_json: bool,
) -> None:
    """Re-enqueue failed events, by id or all at once (narrowed by --action and --since).

    Each runs again as a new generation; its history notes who ($FACTSYNC_OPERATOR, else user@host).
    An event already queued or running is left alone. Exit status 3 when an id is unknown or not failed.

    \b
    Examples:
      factsync failed retry evt_0635c8e1d2a3f9b1c2d3e4f5a6
      factsync failed retry --all
      factsync failed retry --action invoice_is_paid --since 2h
      factsync failed retry --now evt_0635c8e1d2a3f9b1c2d3e4f5a6   # waiting out a backoff: run it now
    """
    selecting = every or action is not None or since is not None
    if event_ids and selecting:
        raise click.UsageError("give event ids, or --all/--action/--since, not both")
    if not event_ids and not selecting:
        raise click.UsageError("which events? give ids, or --all (e.g. `factsync failed retry --all`)")
    if event_ids:
        _requeue(ctx, event_ids, operate.RETRYABLE, as_json, now=now)
        return
    settings, url = settings_and_url(ctx)
    by = operate.operator()

    async def work() -> list[operate.Requeue]:
        async with connected(settings, url) as (_, store):
            chosen = await operate.list_events(
                store, operate.EventFilter("failed", action=action, since=since), limit=None
            )
            with ProgressReport("re-enqueueing", minimum=PROGRESS_FROM) as progress:
                return await operate.requeue_events(
                    store, [event.id for event in chosen], by=by, progress=progress
                )

    results = run_or_fail(url, work())
    if not results and not as_json:
        click.echo("no failed events match: nothing re-enqueued")
        return
    _print_requeues(results, as_json)


@click.command("discard")
@click.argument("event_ids", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why it must not run again; kept with the event.")
@json_option
@click.pass_context
def failed_discard(ctx: click.Context, event_ids: tuple[str, ...], reason: str, as_json: bool) -> None:
    """Give up on failed events: they leave the failed store and `failed retry --all` for good.

    They are kept, with status `discarded`, who discarded them and why, so the decision can be read later
    (`factsync events list --status discarded`); `factsync events replay ID` still runs one if needed.

    \b
    Example:
      factsync failed discard evt_0635c8e1d2a3f9b1c2d3e4f5a6 --reason "invoice deleted in HostFact"
    """
    if not reason.strip():
        raise click.UsageError("--reason may not be empty: it is what the next operator reads")
    settings, url = settings_and_url(ctx)
    by = operate.operator()

    async def work() -> list[operate.Discard]:
        async with connected(settings, url) as (_, store):
            return await operate.discard_events(store, event_ids, by=by, reason=reason)

    results = run_or_fail(url, work())
    if as_json:
        echo_json([asdict(result) for result in results])
    else:
        for result in results:
            click.echo(f"{result.event_id}  {result.detail}")
    if not all(result.discarded for result in results):
        sys.exit(ATTENTION)
