"""`factsync status`: how factsync is doing, from Redis alone, quick enough to type without thinking.

It reads the Redis settings, never the whole configuration (worker/cli/reach.py): the budgets it shows are
the ones the workers published.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict

import click

from worker import operate, redisio
from worker.cli.output import ATTENTION, ago, echo_json, json_option, run_or_fail, table
from worker.cli.reach import redis_url
from worker.store import STATUSES


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """How factsync is doing: queue, events per status, the longest wait, workers and API budgets.

    \b
    Example:
      factsync status
      factsync status --json | jq .events.failed
    """
    url = redis_url(ctx)

    async def work() -> operate.StatusReport:
        redis = redisio.connect(url, retry_for=redisio.COMMAND_RETRY_FOR)
        try:
            return await operate.status_report(redis)
        finally:
            await redis.aclose()

    report = run_or_fail(url, work())
    needs = _needs_a_person(report)
    if as_json:
        data = asdict(report)
        for worker, beat in zip(data["workers"], report.workers, strict=True):
            worker.update(age=round(beat.age, 1), fresh=beat.fresh)
        if report.oldest_waiting is not None:
            data["oldest_waiting"]["age"] = round(report.oldest_waiting.age, 1)
        data["needs_a_person"] = needs
        echo_json(data)
    else:
        _print_status(report)
        if needs:
            click.echo("needs a person: " + "; ".join(needs))
    if needs:
        sys.exit(ATTENTION)


def _needs_a_person(report: operate.StatusReport) -> list[str]:
    """What in the status a person must act on: `status` exits with ATTENTION (3) when there is any."""
    needs = []
    if report.events.get("failed"):
        needs.append(f"{report.events['failed']} failed event(s): factsync failed list")
    paused = [b.administration for b in report.budgets if b.paused_for]
    if paused:
        needs.append(f"calls to {', '.join(paused)} paused after a ban (HTTP 403)")
    if not any(beat.fresh for beat in report.workers):
        needs.append("no live worker: start `factsync worker`")
    return needs


def _print_status(report: operate.StatusReport) -> None:
    click.echo(f"queue      {report.queued_jobs} job(s), {report.deferred_jobs} waiting out a retry backoff")
    counts = [f"{name} {count}" for name, count in report.events.items()]
    if report.waiting:
        # Waiting is not running: a retry's backoff or a ban pause holds these, no worker works on them.
        counts[STATUSES.index("running")] += f" (of which {report.waiting} waiting for a later try)"
    click.echo("events     " + " · ".join(counts))
    oldest = report.oldest_waiting
    if oldest is None:
        click.echo("waiting    nothing")
    else:
        click.echo(
            f"waiting    longest: {oldest.event_id} ({oldest.action}), {oldest.status} for {ago(oldest.age)}"
        )
    fresh = [beat for beat in report.workers if beat.fresh]
    click.echo(
        f"workers    {len(fresh)} alive" + ("" if fresh else ": nothing is syncing (start `factsync worker`)")
    )
    if report.workers:
        table(
            ["WORKER", "LAST BEAT", "RUNNING", "DONE", "FAILED", "RETRIED", "UP"],
            [
                [
                    beat.worker_id,
                    ago(beat.age) + ("" if beat.fresh else f" (stale, > {beat.stale_after:.0f}s)"),
                    beat.jobs_running,
                    beat.jobs_complete,
                    beat.jobs_failed,
                    beat.jobs_retried,
                    ago(time.time() - beat.started_at),
                ]
                for beat in report.workers
            ],
            indent="  ",
        )
    if not report.budgets:
        click.echo("API budget none known yet: each worker publishes the budgets it applies when it starts")
        return
    click.echo("API budget (shared by all workers, as the newest worker applies it)")
    table(
        ["ADMINISTRATION", "ROLE", "LIMIT", "FREE NOW", "STATE"],
        [
            [
                b.administration,
                b.role,
                f"{b.per_minute}/min",
                f"{b.available}/{b.burst}",
                f"PAUSED {b.paused_for:.0f}s more after a ban (HTTP 403)" if b.paused_for else "ok",
            ]
            for b in report.budgets
        ],
        indent="  ",
    )
