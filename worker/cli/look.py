"""The operators' looks at the events: `events list/show` and `failed list/show`, from Redis alone.

Like `status` they read only where Redis is (worker/cli/reach.py), not the whole configuration, so they
start quickly and need no API key; the commands that re-enqueue or discard live in `worker.cli.ops`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click
from redis.asyncio import Redis

from worker import operate, redisio
from worker.cli.groups import LazyGroup
from worker.cli.output import WHEN, ago, echo_json, json_option, local_time, run_or_fail, table
from worker.cli.reach import redis_url
from worker.store import STATUSES, Event, EventReader


@contextlib.asynccontextmanager
async def reading(url: str) -> AsyncIterator[EventReader]:
    redis: Redis = redisio.connect(url, retry_for=redisio.COMMAND_RETRY_FOR)
    try:
        yield EventReader(redis)
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
    url = redis_url(ctx)

    async def work() -> tuple[Event | None, list[dict[str, Any]]]:
        async with reading(url) as store:
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
    url = redis_url(ctx)

    async def work() -> list[Event]:
        async with reading(url) as store:
            return await operate.list_events(store, flt, limit=limit)

    events = run_or_fail(url, work())
    if as_json:
        echo_json([_event_json(event) for event in events])
    else:
        _print_events(events, empty=empty)
        if len(events) == limit:
            click.echo(f"(the newest {limit}; --limit shows more)", err=True)


# -- commands ------------------------------------------------------------------------------------------------


@click.group(
    cls=LazyGroup,
    commands={
        "replay": (
            "worker.cli.ops:events_replay",
            "Run finished events again (done, ignored, failed or discarded).",
        ),
    },
)
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


@click.group(
    cls=LazyGroup,
    commands={
        "retry": (
            "worker.cli.ops:failed_retry",
            "Re-enqueue failed events, by id or all at once (narrowed by --action and --since).",
        ),
        "discard": (
            "worker.cli.ops:failed_discard",
            "Give up on failed events: they leave the failed store and `failed retry --all` for good.",
        ),
    },
)
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
