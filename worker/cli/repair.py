"""The operators' commands that read the APIs: `backfill` and `audit` (with --fix).

The work lives in `worker.resync`; these commands take the API keys, parse options and print the outcome.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import datetime

import click

from tasks.audit import AuditReport
from tasks.model import Route
from worker import resync
from worker.cli.ops import connected, settings_and_url
from worker.cli.output import (
    ATTENTION,
    WHEN,
    ProgressReport,
    ctrl_c_stops,
    echo_json,
    json_option,
    notice,
    run_or_fail,
    table,
)
from worker.config import Settings


def _route(settings: Settings, name: str) -> Route:
    if name not in settings.routes:
        known = ", ".join(sorted(settings.routes)) or "none"
        raise click.ClickException(f"no route named {name!r} (configured: {known})")
    return settings.route(name)


# What a command stopped by Ctrl-C exits with (128 + SIGINT), as a shell reports it.
INTERRUPTED = 130

_window = click.option(
    "--window",
    type=click.IntRange(min=1),
    default=resync.WINDOW,
    show_default=True,
    help="At most this many syncs unfinished at a time; keep it under the workers' max_jobs, so that a "
    "hook's sync always finds a worker free.",
)
_wait = click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the syncs to finish (--no-wait: schedule them all and return).",
)


def _print_run(run: resync.SyncRun, what: str) -> None:
    if run.interrupted:
        click.echo(
            f"stopped: {len(run.event_ids)} of {run.planned} sync(s) scheduled (those finish on the "
            "workers); run the same command again to go on: what is in step by then is skipped"
        )
    if not run.waited:
        click.echo(
            f"{len(run.event_ids)} sync(s) scheduled; follow them with `factsync events list --action {what}`"
        )
        return
    outcome = ", ".join(f"{count} {name}" for name, count in sorted(run.outcomes.items())) or "nothing to do"
    click.echo(f"{len(run.event_ids)} sync(s): {outcome}")
    if run.outcomes.get("failed"):
        click.echo(f"see `factsync failed list --action {what}`; `failed retry --action {what}` re-runs them")


@click.command()
@click.option("--route", "route_name", required=True, help="The route whose target to fill.")
@click.option("--since", **WHEN, help="Only invoices modified since this time: 2026-01-31, 7d.")
@_window
@_wait
@json_option
@click.pass_context
def backfill(
    ctx: click.Context,
    route_name: str,
    since: float | None,
    window: int,
    wait: bool,
    as_json: bool,
) -> None:
    """Sync every invoice of a route's source (or those modified since a time) into its target.

    For a new route, or after factsync was down longer than HostFact's forwarder spooled. Both sides are
    listed by pages first (a call per 1 000 invoices); a mirror whose list row agrees with its source's
    (number, status, amounts, paid amount, date) is left alone, a missing one is made without a search. Each
    invoice left becomes an event (action `backfill`) whose sync runs on the workers like a hook's, through
    the shared API budget, where the hooks' syncs go first; drafts, credit invoices and (purchase) debtors
    without a creditor are skipped as the sync would. Lines are not compared: `audit --deep --fix` mends a
    mirror whose lines alone differ. Ctrl-C stops scheduling; run it again to go on (safe: a sync changes
    only what differs). Exit status 3 when a sync failed, 130 when stopped.

    \b
    Examples:
      factsync backfill --route sales
      factsync backfill --route sales --since 2026-01-01 --window 50
    """
    settings, url = settings_and_url(ctx, secrets=True)
    route = _route(settings, route_name)
    moment = datetime.fromtimestamp(since) if since is not None else None

    async def work() -> resync.SyncRun:
        async with connected(settings, url) as (redis, _):
            label = f"backfill {route.name}: " + ("synced" if wait else "scheduled")
            with (
                ProgressReport(label, quiet=as_json) as progress,
                ctrl_c_stops("the backfill") as stopped,
            ):
                return await resync.backfill(
                    settings,
                    redis,
                    route,
                    since=moment,
                    window=window,
                    wait=wait,
                    progress=progress,
                    notice=notice,
                    stopped=stopped,
                )

    run = run_or_fail(url, work())
    if as_json:
        echo_json(asdict(run))
    else:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(run.skipped.items()))
        click.echo(
            f"{run.listed} invoice(s) listed in {route.source}" + (f"; skipped {skipped}" if skipped else "")
        )
        click.echo(
            f"{run.in_step} mirror(s) in step by their list rows; {run.planned} to sync, "
            f"{run.created} of them new"
        )
        _print_run(run, "backfill")
    if run.outcomes.get("failed"):
        sys.exit(ATTENTION)
    if run.interrupted:
        sys.exit(INTERRUPTED)


@click.command()
@click.option("--route", "route_name", required=True, help="The route to audit.")
@click.option("--since", **WHEN, help="Only invoices modified in the source since this time.")
@click.option("--fix", is_flag=True, help="Sync each drifted invoice a sync can mend (as a backfill does).")
@click.option(
    "--deep",
    is_flag=True,
    help="Read every invoice whole on both sides and compare lines, term and discount too (two reads an "
    "invoice; without it, list rows are compared and only what they cannot vouch for is read whole).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Go on from an audit stopped by Ctrl-C: what it read whole and has not changed since (by both list "
    "rows' Modified) is not read again.",
)
@_window
@_wait
@json_option
@click.pass_context
def audit(
    ctx: click.Context,
    route_name: str,
    since: float | None,
    fix: bool,
    deep: bool,
    resume: bool,
    window: int,
    wait: bool,
    as_json: bool,
) -> None:
    """Compare a route's target with its source and print the drift.

    Lists both sides by pages (a call per 1 000 invoices) and compares what the rows show of every invoice
    the route mirrors and its mirror (paired by the id map): number, status, amount, paid amount, date and
    the credit notes. An invoice whose rows disagree, whose mirror the id map does not name, or all of them
    with --deep, is read whole on both sides (the mirror found by the id map, else by its
    [factsync:SOURCE:ID] marker) and compared field by field, lines, term and discount included. Read only,
    through the shared budget, where the hooks' syncs go first. --fix then syncs the drifted invoices
    (events with action `audit`). Exit status 3 when drift was found (and, with --fix, not all of it
    mended), 130 when stopped by Ctrl-C before the end (--resume then goes on from there).

    \b
    Examples:
      factsync audit --route sales
      factsync audit --route sales --deep
      factsync audit --route sales --deep --resume
      factsync audit --route sales --since 30d --fix
    """
    settings, url = settings_and_url(ctx, secrets=True)
    route = _route(settings, route_name)
    moment = datetime.fromtimestamp(since) if since is not None else None

    async def work() -> tuple[AuditReport, resync.SyncRun | None]:
        async with connected(settings, url) as (redis, _):
            with (
                ProgressReport(f"audit {route.name}: compared", quiet=as_json) as progress,
                ctrl_c_stops("the audit") as stopped,
            ):
                report = await resync.audit(
                    settings,
                    redis,
                    route,
                    since=moment,
                    deep=deep,
                    progress=progress,
                    stopped=stopped,
                    resume=resume,
                )
            run = None
            if fix and not report.interrupted and any(drift.fixable for drift in report.drifts):
                with (
                    ProgressReport(f"audit {route.name}: fixed", quiet=as_json) as progress,
                    ctrl_c_stops("the fixes") as stopped,
                ):
                    run = await resync.fix(
                        settings,
                        redis,
                        route,
                        report.drifts,
                        window=window,
                        wait=wait,
                        progress=progress,
                        notice=notice,
                        stopped=stopped,
                    )
            return report, run

    report, run = run_or_fail(url, work())
    if as_json:
        echo_json({**asdict(report), "fix": asdict(run) if run else None})
    else:
        _print_audit(report, route.name)
        if run is not None:
            _print_run(run, "audit")
            click.echo(f"run `factsync audit --route {route.name}` again to confirm")
    mended = run is not None and run.waited and not run.outcomes.get("failed") and not run.interrupted
    if report.drifts and not (mended and all(drift.fixable for drift in report.drifts)):
        sys.exit(ATTENTION)
    if report.interrupted or (run is not None and run.interrupted):
        sys.exit(INTERRUPTED)


def _print_audit(report: AuditReport, route: str) -> None:
    if report.drifts:
        rows: list[list[str]] = []
        for drift in report.drifts:
            for number, difference in enumerate(drift.differences):
                first = number == 0
                rows.append(
                    [
                        drift.code if first else "",
                        difference.field,
                        difference.source,
                        difference.target,
                        ("yes" if drift.fixable else "no: needs a person") if first else "",
                    ]
                )
        table(["INVOICE", "DIFFERS", "SOURCE", "TARGET", "SYNC FIXES"], rows)
    skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(report.skipped.items()))
    click.echo(
        f"route {route}: {report.compared} invoice(s) compared, {len(report.drifts)} drifted"
        + (f"; skipped {skipped}" if skipped else "")
    )
    click.echo(
        f"{report.by_header} compared by their list rows, {report.by_lines} read whole"
        + (f" ({report.resumed} of them in the audit resumed)" if report.resumed else "")
        + ("; stopped before the end (Ctrl-C): --resume goes on from here" if report.interrupted else "")
    )
