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
from worker.cli.ops import (
    ATTENTION,
    WHEN,
    ProgressReport,
    connected,
    echo_json,
    json_option,
    notice,
    run_or_fail,
    settings_and_url,
    table,
)
from worker.config import Settings


def _route(settings: Settings, name: str) -> Route:
    if name not in settings.routes:
        known = ", ".join(sorted(settings.routes)) or "none"
        raise click.ClickException(f"no route named {name!r} (configured: {known})")
    return settings.route(name)


_window = click.option(
    "--window",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="At most this many syncs unfinished at a time.",
)
_wait = click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the syncs to finish (--no-wait: schedule them all and return).",
)


def _print_run(run: resync.SyncRun, what: str) -> None:
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

    For a new route, or after factsync was down longer than HostFact's forwarder spooled. Each invoice
    becomes an event (action `backfill`) whose sync runs on the workers like a hook's, through the shared
    API budget; drafts, credit invoices and (purchase) debtors without a creditor are skipped as the sync
    would. Safe to run again: a sync changes only what differs. Exit status 3 when a sync failed.

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
            with ProgressReport(label) as progress:
                return await resync.backfill(
                    settings,
                    redis,
                    route,
                    since=moment,
                    window=window,
                    wait=wait,
                    progress=progress,
                    notice=notice,
                )

    run = run_or_fail(url, work())
    if as_json:
        echo_json(asdict(run))
    else:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(run.skipped.items()))
        click.echo(
            f"{run.listed} invoice(s) listed in {route.source}" + (f"; skipped {skipped}" if skipped else "")
        )
        _print_run(run, "backfill")
    if run.outcomes.get("failed"):
        sys.exit(ATTENTION)


@click.command()
@click.option("--route", "route_name", required=True, help="The route to audit.")
@click.option("--since", **WHEN, help="Only invoices modified in the source since this time.")
@click.option("--fix", is_flag=True, help="Sync each drifted invoice a sync can mend (as a backfill does).")
@_window
@_wait
@json_option
@click.pass_context
def audit(
    ctx: click.Context,
    route_name: str,
    since: float | None,
    fix: bool,
    window: int,
    wait: bool,
    as_json: bool,
) -> None:
    """Compare a route's target with its source, invoice by invoice, and print the drift.

    Compares status, number, amount, paid amount, date, term and lines of every invoice the route
    mirrors with its mirror (found by the id map, else by its [factsync:SOURCE:ID] marker). Read only,
    two API reads per invoice through the shared budget. --fix then syncs the drifted invoices (events
    with action `audit`). Exit status 3 when drift was found (and, with --fix, not all of it mended).

    \b
    Examples:
      factsync audit --route sales
      factsync audit --route sales --since 30d --fix
    """
    settings, url = settings_and_url(ctx, secrets=True)
    route = _route(settings, route_name)
    moment = datetime.fromtimestamp(since) if since is not None else None

    async def work() -> tuple[AuditReport, resync.SyncRun | None]:
        async with connected(settings, url) as (redis, _):
            with ProgressReport(f"audit {route.name}: compared") as progress:
                report = await resync.audit(settings, redis, route, since=moment, progress=progress)
            run = None
            if fix and any(drift.fixable for drift in report.drifts):
                with ProgressReport(f"audit {route.name}: fixed") as progress:
                    run = await resync.fix(
                        settings,
                        redis,
                        route,
                        report.drifts,
                        window=window,
                        wait=wait,
                        progress=progress,
                        notice=notice,
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
    mended = run is not None and run.waited and not run.outcomes.get("failed")
    if report.drifts and not (mended and all(drift.fixable for drift in report.drifts)):
        sys.exit(ATTENTION)


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
