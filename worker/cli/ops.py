"""The operators' commands that need only Redis: status, events, failed events, replay.

The queries and actions live in `worker.operate` (the dashboard uses them too); this module parses options
and prints tables, or JSON with --json, and holds the plumbing `worker.cli.repair` shares.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click
from redis.asyncio import Redis

from worker import operate, redisio
from worker.cli.context import load_settings_for
from worker.cli.groups import SuggestingGroup
from worker.cli.output import (
    ATTENTION,
    PROGRESS_FROM,
    WHEN,
    ProgressReport,
    ago,
    echo_json,
    json_option,
    local_time,
    run_or_fail,
    table,
)
from worker.config import Settings
from worker.embedded_redis import running_redis_url
from worker.store import STATUSES, Event, EventStore


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


# -- rendering events ----------------------------------------------------------------------------------------


def _invoice(event: Event) -> str:
    code = event.payload.get("InvoiceCode", "")
    return str(code or event.payload.get("id", ""))


def _summary(event: Event) -> str:
    if event.status == "discarded":
        note = operate.discarded_note(event) or {}
        return f"discarded by {note.get('by', '?')}: {note.get('reason', '')}"
    if event.reason:
        return event.reason
    return "; ".join(
        f"{route}: {outcome.get('detail', '')}" for route, outcome in sorted(event.outcomes.items())
    )


def _event_json(event: Event) -> dict[str, Any]:
    data = asdict(event)
    data["received"] = datetime.fromtimestamp(event.received_at).astimezone().isoformat(timespec="seconds")
    return data


def _print_events(events: list[Event], *, empty: str) -> None:
    if not events:
        click.echo(empty)
        return
    now = time.time()
    table(
        ["ID", "AGE", "SOURCE", "ACTION", "INVOICE", "STATUS", "ROUTES", "TRIES", "DETAIL"],
        [
            [
                e.id,
                ago(now - e.received_at),
                e.source,
                e.action,
                _invoice(e),
                "waiting" if e.waiting(now) else e.status,
                ",".join(e.routes) or "-",
                e.tries,
                _summary(e),
            ]
            for e in events
        ],
    )


def _print_event(event: Event) -> None:
    """Everything factsync knows of one event, for an operator deciding what to do with it."""
    rows = [
        ("status", f"{event.status} (tries {event.tries}, generation {event.generation})"),
        ("source", event.source),
        ("action", event.action),
        ("received", f"{local_time(event.received_at)} ({ago(time.time() - event.received_at)} ago)"),
        ("webhook-id", event.webhook_id or "- (not from a hook)"),
        ("routes", ", ".join(event.routes) or "- (not fanned out yet)"),
    ]
    if event.reason:
        rows.append(("reason", event.reason))
    if event.waiting(time.time()) and event.waiting_until is not None:
        rows.append(("waiting", f"{event.waiting_reason}, next try at {local_time(event.waiting_until)}"))
    if event.problems:
        # Fields of the hook that did not parse; the sync reads the invoice itself and did not need them.
        rows.append(("problems", "; ".join(event.problems)))
    click.echo(f"event {event.id}")
    for name, value in rows:
        click.echo(f"  {name:<11} {value}")
    click.echo("payload")
    click.echo(_indent(json.dumps(event.payload, indent=2, ensure_ascii=False)))
    for route in event.routes or sorted(event.outcomes):
        outcome = event.outcomes.get(route)
        if outcome is None:
            click.echo(f"route {route}: no outcome yet")
            continue
        took = f", {outcome['elapsed_ms']} ms" if "elapsed_ms" in outcome else ""
        click.echo(f"route {route}: {outcome.get('status')} after {outcome.get('tries', '?')} try(s){took}")
        if outcome.get("detail"):
            click.echo(f"  detail  {outcome['detail']}")
        if outcome.get("reason"):
            click.echo(f"  reason  {outcome['reason']}")
        if "planned" in outcome:
            click.echo(
                "  planned (dry run, nothing written):" if outcome["planned"] else "  planned: nothing"
            )
            for number, step in enumerate(outcome["planned"], start=1):
                click.echo(f"    {number}. {step}")
        calls = outcome.get("calls") or []
        if calls:
            click.echo(f"  API calls of the last try ({len(calls)}):")
        else:
            click.echo("  API calls: none")
        for number, call in enumerate(calls, start=1):
            click.echo(f"    {number}. {call}")
        if outcome.get("exchange"):
            click.echo("  last API exchange (keys redacted):")
            click.echo(_indent(json.dumps(outcome["exchange"], indent=2, ensure_ascii=False), 4))
    if event.last_exchange and not any(o.get("exchange") for o in event.outcomes.values()):
        click.echo("last API exchange (keys redacted)")
        click.echo(_indent(json.dumps(event.last_exchange, indent=2, ensure_ascii=False)))
    click.echo("history" if event.history else "history: never re-enqueued")
    for note in event.history:
        if "discarded_at" in note:
            click.echo(
                f"  {local_time(note['discarded_at'])}  discarded by {note.get('by')}: {note.get('reason')}"
            )
        else:
            at = local_time(note.get("requeued_at", 0))
            click.echo(f"  {at}  re-enqueued by {note.get('by')} (generation {note.get('generation')})")


def _indent(text: str, spaces: int = 2) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


def _show(ctx: click.Context, event_id: str, as_json: bool) -> None:
    settings, url = settings_and_url(ctx)

    async def work() -> tuple[Event | None, list[dict[str, Any]]]:
        async with connected(settings, url) as (_, store):
            return await operate.get_event(store, event_id), await store.attempts(event_id)

    event, attempts = run_or_fail(url, work())
    if event is None:
        raise click.ClickException(f"no event {event_id!r} (ids look like evt_0635c8e1d2a3f9b1c2d3e4f5a6)")
    if as_json:
        echo_json(_event_json(event) | {"attempts": attempts})
    else:
        _print_event(event)
        _print_attempts(attempts)


def _print_attempts(attempts: list[dict[str, Any]]) -> None:
    """Every try of the event's syncs, oldest first: when, on which route, how it ended, its calls."""
    if not attempts:
        return
    click.echo("tries")
    for entry in attempts:
        when, route, outcome = local_time(entry["at"]), entry["route"], entry["outcome"]
        line = f"  {when}  {route}  try {entry['try']}  {outcome}  {entry['ms']} ms"
        if entry.get("until"):
            line += f", next try at {local_time(entry['until'])}"
        click.echo(line)
        if entry.get("note"):
            click.echo(f"      {entry['note']}")
        for call in entry.get("calls", []):
            click.echo(f"      {call}")


def _filter_options(*, status: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The filters `events list` and `failed list` share."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option("--action", help="Only this action, e.g. invoice_is_paid, backfill, audit."),
            click.option("--source", help="Only events of this source administration."),
            click.option("--route", help="Only events fanned out to this route."),
            click.option(
                "--invoice", help="Only events about this invoice number (InvoiceCode), e.g. F0042."
            ),
            click.option("--since", **WHEN, help="Received at or after this time: 2026-01-31, 2h, 3d."),
            click.option("--until", **WHEN, help="Received at or before this time."),
            click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True),
            json_option,
        ]
        if status:
            options.insert(0, click.option("--status", type=click.Choice(STATUSES), help="Only this status."))
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _list(ctx: click.Context, flt: operate.EventFilter, limit: int, as_json: bool, empty: str) -> None:
    settings, url = settings_and_url(ctx)

    async def work() -> list[Event]:
        async with connected(settings, url) as (_, store):
            return await operate.list_events(store, flt, limit=limit)

    events = run_or_fail(url, work())
    if as_json:
        echo_json([_event_json(event) for event in events])
    else:
        _print_events(events, empty=empty)
        if len(events) == limit:
            click.echo(f"(the newest {limit}; --limit shows more)", err=True)


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


@click.group(cls=SuggestingGroup)
def events() -> None:
    """List and inspect events (every hook factsync accepted), and run them again.

    \b
    Examples:
      factsync events list --status failed --since 2h
      factsync events list --invoice F0042
      factsync events show evt_0635c8e1d2a3f9b1c2d3e4f5a6
      factsync events replay evt_0635c8e1d2a3f9b1c2d3e4f5a6
    """


@events.command("list")
@_filter_options(status=True)
@click.pass_context
def events_list(
    ctx: click.Context,
    status: str | None,
    action: str | None,
    source: str | None,
    route: str | None,
    invoice: str | None,
    since: float | None,
    until: float | None,
    limit: int,
    as_json: bool,
) -> None:
    """Events, newest first, filtered by status, action, source, route, invoice number or time.

    \b
    Examples:
      factsync events list --status running
      factsync events list --action invoice_is_paid --since 2026-01-31 --until 2026-02-01
    """
    flt = operate.EventFilter(status, action, source, route, invoice, since, until)  # type: ignore[arg-type]
    _list(ctx, flt, limit, as_json, "no events match")


@events.command("show")
@click.argument("event_id")
@json_option
@click.pass_context
def events_show(ctx: click.Context, event_id: str, as_json: bool) -> None:
    """One event in full: payload, tries, the API calls and the outcome per route, and its history.

    \b
    Example:
      factsync events show evt_0635c8e1d2a3f9b1c2d3e4f5a6
    """
    _show(ctx, event_id, as_json)


@events.command("replay")
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


@click.group(cls=SuggestingGroup)
def failed() -> None:
    """The failed store: events a sync could not complete, with the reason and the last API exchange.

    Fix the cause (a mapping, the target's data, a key), then re-enqueue; or discard what should not run.

    \b
    Examples:
      factsync failed list
      factsync failed show evt_0635c8e1d2a3f9b1c2d3e4f5a6
      factsync failed retry --all
      factsync failed discard evt_0635c8e1d2a3f9b1c2d3e4f5a6 --reason "booked by hand"
    """


@failed.command("list")
@_filter_options(status=False)
@click.pass_context
def failed_list(
    ctx: click.Context,
    action: str | None,
    source: str | None,
    route: str | None,
    invoice: str | None,
    since: float | None,
    until: float | None,
    limit: int,
    as_json: bool,
) -> None:
    """Failed events, newest failure first, with their reason.

    \b
    Example:
      factsync failed list --since 1d --route sales
    """
    flt = operate.EventFilter("failed", action, source, route, invoice, since, until)
    _list(ctx, flt, limit, as_json, "no failed events")


@failed.command("show")
@click.argument("event_id")
@json_option
@click.pass_context
def failed_show(ctx: click.Context, event_id: str, as_json: bool) -> None:
    """A failed event in full: reason, tries, API calls, the last API exchange (keys redacted).

    \b
    Example:
      factsync failed show evt_0635c8e1d2a3f9b1c2d3e4f5a6
    """
    _show(ctx, event_id, as_json)


@failed.command("retry")
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


@failed.command("discard")
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
