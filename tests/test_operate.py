"""The operators' commands, run for real (`python -m worker.cli` in a subprocess) against a running stack.

Failed events come from the simulator's faults; drift is planted in the simulated target by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from redis.asyncio import Redis

from tasks.drift import Difference, compare
from tasks.invoice import Invoice, Line, Status
from tests.conftest import HOOK_SECRET, SOURCE_KEY, TARGET_KEY, hook_body, sign
from tests.stack import LINES as HOSTFACT_SEED_LINES
from tests.stack import TEST_BUDGET, Stack, running_stack
from worker import keys, operate
from worker.cli.main import main
from worker.operate import parse_when
from worker.ratelimit import SharedRateLimit
from worker.redisio import done

OPERATOR = "ops@test"
# The stack's workers get a budget that does not slow the tests down (tests.stack.TEST_BUDGET).
TARGET_LIMIT = TEST_BUDGET


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def write_config(stack: Stack, directory: Path) -> Path:
    """A factsync.toml for the stack's source, target and route, as an operator's machine would have."""
    settings = stack.settings
    ((route_name, route),) = settings.routes.items()
    target = settings.targets[route.target]
    text = f"""
redis_url = "{settings.redis_url}"
[sources.hostfact]
api_url = "{settings.sources["hostfact"].api_url}"
api_key = "{SOURCE_KEY}"
hook_secrets = ["{HOOK_SECRET}"]
rate_limit_per_minute = {settings.sources["hostfact"].rate_limit_per_minute}
[targets.{route.target}]
dialect = "{target.dialect}"
api_url = "{target.api_url}"
api_key = "{TARGET_KEY}"
rate_limit_per_minute = {target.rate_limit_per_minute}
[routes.{route_name}]
source = "{route.source}"
target = "{route.target}"
ledger = "{route.ledger}"
dry_run = {"true" if route.dry_run else "false"}
"""
    path = directory / "factsync.toml"
    path.write_text(text)
    return path


async def cli(config: Path, *args: str) -> Ran:
    """`factsync -c CONFIG ARGS...`, in this process (click's runner, in a thread: the commands run their own
    event loop). A subprocess would cost a second of imports each; tests/test_cli.py runs the real command."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("FACTSYNC_")}
    env["FACTSYNC_OPERATOR"] = OPERATOR
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["-c", str(config), *args], env=env, catch_exceptions=False
    )
    return Ran(result.exit_code, result.stdout, result.stderr)


async def post_hook(stack: Stack, action: str, data: dict[str, Any]) -> str:
    body = hook_body(action, data)
    url = f"{stack.running[0].listener_url}/hooks/hostfact"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=sign(body)) as r:
        assert r.status == 202
        return str((await r.json())["event_id"])


async def new_invoices(stack: Stack, count: int) -> list[int]:
    """Invoices made through HostFact's API, so their hooks reach factsync and they get mirrored."""
    if not stack.hostfact.debtors:
        stack.hostfact.add_debtor(CompanyName="Company X")
    made = []
    for _ in range(count):
        answer = await stack.call(
            "invoice", "add", DebtorCode="DB0001", InvoiceLines=HOSTFACT_SEED_LINES, Status=2
        )
        made.append(int(answer["invoice"]["Identifier"]))
    await stack.settled()
    return made


async def test_failed_events_are_listed_shown_retried_discarded_and_replayed(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    retry = {"max_tries": 2, "base_delay": 0.01, "max_delay": 0.05, "max_span": 60}
    async with running_stack(redis_url, retry=retry) as stack:
        invoices = await new_invoices(stack, 3)
        # The target answers 503 to everything: each payment's sync gives up after its 2 tries.
        stack.target.faults.inject("http_503", times=50)
        for invoice in invoices:
            await stack.call("invoice", "markaspaid", Identifier=invoice)
        events = await stack.settled()
        first, second, third = sorted((e for e in events if e.status == "failed"), key=lambda e: e.id)
        stack.target.faults.clear()
        config = write_config(stack, tmp_path)

        listed = await cli(config, "failed", "list")
        assert listed.code == 0, listed.err
        for event in (first, second, third):
            assert event.id in listed.out
        assert "gave up after 2 tries" in listed.out
        as_json = await cli(config, "failed", "list", "--json")
        assert {e["id"] for e in as_json.json()} == {first.id, second.id, third.id}

        shown = await cli(config, "failed", "show", first.id)
        assert shown.code == 0, shown.err
        assert "invoice_is_paid" in shown.out and "gave up after 2 tries" in shown.out
        assert "API calls of the last try" in shown.out, "a failed try lists the calls it made"
        assert '"http_status": 503' in shown.out, "the last API exchange is shown"
        assert TARGET_KEY not in shown.out and SOURCE_KEY not in shown.out
        # Every try on the timeline, not only the last: the first waited, the second failed.
        timeline = shown.out.split("\ntries\n", 1)[1]
        assert "sales  try 1  retry" in timeline and "next try at" in timeline
        assert "sales  try 2  failed" in timeline and "HTTP 503" in timeline
        attempts = (await cli(config, "events", "show", first.id, "--json")).json()["attempts"]
        assert [(a["try"], a["outcome"]) for a in attempts] == [(1, "retry"), (2, "failed")]
        assert attempts[0]["until"] > attempts[0]["at"] and attempts[1]["calls"]

        retried = await cli(config, "failed", "retry", first.id)
        assert retried.code == 0, retried.err
        assert f"{first.id}  failed → queued as fanout:{first.id}:1" in retried.out
        await stack.settled()
        again = await stack.store.get(first.id)
        assert again is not None and again.status == "done"
        assert again.history[-1]["by"] == OPERATOR
        not_failed = await cli(config, "failed", "retry", first.id)
        assert not_failed.code == 3 and "it is done, not failed" in not_failed.out

        shown_json = (await cli(config, "failed", "show", second.id, "--json")).json()
        assert shown_json["id"] == second.id and shown_json["status"] == "failed"
        discarded = await cli(config, "failed", "discard", second.id, "--reason", "booked by hand", "--json")
        assert discarded.code == 0 and discarded.json()[0]["discarded"] is True
        everything = await cli(config, "failed", "retry", "--all", "--json")
        assert everything.code == 0, everything.err
        assert [(r["event_id"], r["verdict"]) for r in everything.json()] == [(third.id, "requeued")]
        await stack.settled()
        assert (await stack.store.get(third.id)).status == "done"  # type: ignore[union-attr]
        assert (await stack.store.get(second.id)).status == "discarded"  # type: ignore[union-attr]
        assert await stack.store.ids("failed") == []

        kept = await cli(config, "events", "list", "--status", "discarded")
        assert second.id in kept.out and f"discarded by {OPERATOR}: booked by hand" in kept.out

        # A replay while the event still runs does nothing, and says so.
        stack.hostfact.faults.inject("latency", controller="invoice", action="show", seconds=2.5, times=1)
        replayed = await cli(config, "events", "replay", first.id)
        assert replayed.code == 0 and "done → queued" in replayed.out
        busy = await cli(config, "events", "replay", first.id)
        assert busy.code == 0 and "nothing done" in busy.out and "1 already waiting" in busy.out
        busy_json = await cli(config, "events", "replay", first.id, "--json")
        assert busy_json.json()[0]["verdict"] == "waiting"
        await stack.settled()
        replayed_event = await stack.store.get(first.id)
        assert replayed_event is not None and replayed_event.status == "done"
        assert replayed_event.generation == 2
        history = await cli(config, "events", "show", first.id)
        assert history.out.count(f"re-enqueued by {OPERATOR}") == 2
        assert "API calls of the last try" in history.out and "1. hostfact: invoice.show" in history.out


async def test_retrying_many_shows_progress_and_selects_by_action(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with running_stack(redis_url) as stack:
        # Hooks for invoices HostFact does not know: each sync is refused for good at its first try.
        for number in range(22):
            await post_hook(
                stack, "invoice_is_paid", {"id": 900 + number, "Debtor": 1, "InvoiceCode": f"X{number}"}
            )
        await post_hook(stack, "invoice_is_edited", {"id": 999, "Debtor": 1, "InvoiceCode": "X999"})
        events = await stack.settled()
        assert all(e.status == "failed" for e in events) and len(events) == 23
        config = write_config(stack, tmp_path)

        by_invoice = await cli(config, "events", "list", "--invoice", "x999", "--json")
        assert [e["action"] for e in by_invoice.json()] == ["invoice_is_edited"]

        chosen = await cli(config, "failed", "retry", "--action", "invoice_is_paid", "--since", "1h")
        assert chosen.code == 0, chosen.err
        assert "22 re-enqueued" in chosen.out
        assert "re-enqueueing: 22/22 (100%)" in chosen.err, "a progress report for a bulk retry"
        edited = next(e for e in events if e.action == "invoice_is_edited")
        assert edited.id not in chosen.out
        await stack.settled()

        usage = await cli(config, "failed", "retry")
        assert usage.code == 2 and "--all" in usage.err
        unknown = await cli(config, "failed", "retry", "evt_nope")
        assert unknown.code == 3 and "no such event" in unknown.out
        missing = await cli(config, "events", "show", "evt_nope")
        assert missing.code == 1 and "no event 'evt_nope'" in missing.err
        future = await cli(config, "events", "list", "--since", "tomorrow")
        assert future.code == 2 and "is not a time" in future.err


async def test_status_shows_queue_events_workers_and_budgets(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with running_stack(redis_url) as stack:
        await new_invoices(stack, 1)
        config = write_config(stack, tmp_path)
        healthy = await cli(config, "status")
        assert healthy.code == 0 and "needs a person" not in healthy.out, healthy.out + healthy.err

        await SharedRateLimit(redis, {}).pause("target", 120)
        shown = await cli(config, "status")
        # A ban needs a person: exit 3, like audit's drift, with the reason on one line.
        assert shown.code == 3, shown.err
        assert "done 1" in shown.out and "failed 0" in shown.out
        assert "workers    1 alive" in shown.out
        assert "PAUSED" in shown.out and f"{TARGET_LIMIT}/min" in shown.out
        assert "needs a person: calls to target paused after a ban (HTTP 403)" in shown.out

        ran = await cli(config, "status", "--json")
        assert ran.code == 3
        report = ran.json()
        assert report["needs_a_person"] == ["calls to target paused after a ban (HTTP 403)"]
        assert report["events"]["done"] == 1 and report["queued_jobs"] == 0
        assert [w["fresh"] for w in report["workers"]] == [True]
        budget = {b["administration"]: b for b in report["budgets"]}
        assert budget["target"]["paused_for"] > 100 and budget["hostfact"]["paused_for"] == 0
        assert report["oldest_waiting"] is None


async def test_status_and_check_need_only_where_redis_is(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    """An operator's machine or a probe may hold no more than `redis_url`, or a file whose other settings are
    wrong: status shows the budgets the workers apply, with their ban pauses, and check answers."""
    async with running_stack(redis_url) as stack:
        await new_invoices(stack, 1)
        await SharedRateLimit(redis, {}).pause("target", 120)
        only_redis = tmp_path / "only-redis.toml"
        only_redis.write_text(f'redis_url = "{redis_url}"\n')
        broken = tmp_path / "broken.toml"
        broken.write_text(write_config(stack, tmp_path).read_text().replace('source = "', 'source = "no'))
        for config in (only_redis, broken):
            shown = await cli(config, "status", "--json")
            assert shown.code == 3, shown.err
            budget = {b["administration"]: b for b in shown.json()["budgets"]}
            assert set(budget) == {"hostfact", "target"}, "the limits the worker published"
            assert (budget["hostfact"]["role"], budget["hostfact"]["per_minute"]) == ("source", TEST_BUDGET)
            assert (budget["target"]["role"], budget["target"]["per_minute"]) == ("target", TARGET_LIMIT)
            assert budget["target"]["paused_for"] > 100
            assert shown.json()["needs_a_person"] == ["calls to target paused after a ban (HTTP 403)"]
            check = await cli(config, "check")
            assert check.code == 0 and check.out.startswith("ok: "), check.out + check.err
            listed = await cli(config, "events", "list", "--json")
            assert listed.code == 0 and [e["status"] for e in listed.json()] == ["done"], listed.err
            shown_event = await cli(config, "events", "show", listed.json()[0]["id"])
            assert shown_event.code == 0 and "done" in shown_event.out, shown_event.err
            assert (await cli(config, "failed", "list", "--json")).json() == []
        # What writes jobs needs the whole configuration (a job's expiry is the retry span's): it refuses the
        # broken one, naming the setting.
        retried = await cli(broken, "failed", "retry", "--all")
        assert retried.code == 1 and "routes.sales.source: no source named 'nohostfact'" in retried.err


async def test_status_before_any_worker_says_no_budget_is_known(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "factsync.toml"
    config.write_text(f'redis_url = "{redis_url}"\n')
    shown = await cli(config, "status")
    assert shown.code == 3, shown.err
    assert "API budget none known yet" in shown.out
    assert "needs a person: no live worker: start `factsync worker`" in shown.out


async def test_a_light_command_names_a_bad_redis_setting_and_reads_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "factsync.toml"
    config.write_text('redis_url = "http://redis:6379/0"\n[sources.x]\nnot_a_setting = 1\n')
    for command in (["status"], ["check"], ["events", "list"], ["failed", "show", "evt_x"]):
        ran = await cli(config, *command)
        assert ran.code == 1, ran.out + ran.err
        assert f"invalid configuration in {config}:" in ran.err and "redis_url: " in ran.err
        assert "not_a_setting" not in ran.err, "a light command reads only where Redis is"
    config.write_text("redis_url = 6379\n")
    ran = await cli(config, "status")
    assert ran.code == 1 and "redis_url: Input should be a valid string" in ran.err


async def test_read_only_commands_need_only_redis(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """The systemd and Kubernetes health checks run `factsync check` with no API key or hook secret at hand;
    an operator's look at the events needs none either. A command that calls the APIs still asks for them."""
    async with running_stack(redis_url) as stack:
        await new_invoices(stack, 1)
        full = write_config(stack, tmp_path).read_text()
        bare = "\n".join(
            line for line in full.splitlines() if not line.startswith(("api_key", "hook_secrets"))
        )
        config = tmp_path / "bare.toml"
        config.write_text(bare)

        status = await cli(config, "status", "--json")
        assert status.code == 0, status.err
        assert status.json()["events"]["done"] == 1
        assert (await cli(config, "events", "list", "--json")).code == 0
        assert (await cli(config, "failed", "list", "--json")).json() == []
        check = await cli(config, "check")
        assert check.code == 0 and check.out.startswith("ok: "), check.out + check.err
        backfill = await cli(config, "backfill", "--route", "sales")
        assert backfill.code == 1
        assert "sources.hostfact.api_key: missing (required)" in backfill.err
        assert "targets.target.api_key: missing (required)" in backfill.err


async def test_backfill_syncs_the_sources_invoices_with_a_progress_report(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with running_stack(redis_url) as stack:
        # Invoices factsync never heard of, made "last year"; and one draft, which is not mirrored.
        stack.hostfact.store.clock = lambda: datetime(2025, 3, 1, 12, 0, 0)
        stack.hostfact.add_debtor(CompanyName="Company X")
        for _ in range(22):
            stack.hostfact.add_invoice(DebtorCode="DB0001", InvoiceLines=HOSTFACT_SEED_LINES, Status=2)
        stack.hostfact.add_invoice(DebtorCode="DB0001", InvoiceLines=HOSTFACT_SEED_LINES)
        stack.hostfact.store.clock = datetime.now
        config = write_config(stack, tmp_path)

        ran = await cli(config, "backfill", "--route", "sales")
        assert ran.code == 0, ran.err
        assert "23 invoice(s) listed in hostfact; skipped 1 draft" in ran.out
        assert "22 sync(s): 22 done" in ran.out
        assert "0 mirror(s) in step by their list rows; 22 to sync, 22 of them new" in ran.out
        assert "backfill sales: synced: 22/22 (100%)" in ran.err, "a progress report"
        assert len(stack.target.invoices) == 22
        listed = (await cli(config, "events", "list", "--action", "backfill", "--json")).json()
        assert len(listed) == 22 and {e["status"] for e in listed} == {"done"}
        assert listed[0]["routes"] == ["sales"] and listed[0]["outcomes"]["sales"]["calls"]

        # Paid in HostFact while no hook got through: a backfill since an hour ago catches it up.
        paid = stack.hostfact.invoice_by_code("F0005")
        stack.hostfact.execute("invoice", "markaspaid", {"Identifier": paid["Identifier"]})
        cut = datetime.now().isoformat()
        since = await cli(config, "backfill", "--route", "sales", "--since", "1h", "--json")
        assert since.code == 0, since.err
        # Once a crash after the work ran (asdict of a Counter made tuple keys); the JSON must parse.
        run = since.json()
        assert (run["listed"], run["outcomes"], run["waited"]) == (1, {"done": 1}, True)
        assert "backfill sales:" not in since.err, "--json prints no progress"
        assert stack.target.invoice_by_code("F0005")["Status"] == 4
        one = (await cli(config, "events", "list", "--invoice", "F0005", "--since", cut, "--json")).json()
        assert [e["action"] for e in one] == ["backfill"] and one[0]["payload"]["since"]

        unknown = await cli(config, "backfill", "--route", "nope")
        assert unknown.code == 1 and "no route named 'nope'" in unknown.err


async def test_audit_finds_planted_drift_and_fix_mends_it(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with running_stack(redis_url) as stack:
        first, second, _ = await new_invoices(stack, 3)
        paid_mirror = stack.target.invoice_by_code(stack.hostfact.invoice(first)["InvoiceCode"])
        paid_mirror["AmountPaid"] = Decimal("10.00")  # booked by hand in the target
        lost = stack.target.invoice_by_code(stack.hostfact.invoice(second)["InvoiceCode"])
        del stack.target.invoices[lost["Identifier"]]  # deleted by hand in the target
        config = write_config(stack, tmp_path)

        found = await cli(config, "audit", "--route", "sales")
        assert found.code == 3, found.err
        rows = [line.split() for line in found.out.splitlines()]
        assert [paid_mirror["InvoiceCode"], "paid", "0.00", "10.00", "yes"] in rows
        assert [lost["InvoiceCode"], "mirror", lost["InvoiceCode"], "missing", "yes"] in rows
        assert "3 invoice(s) compared, 2 drifted" in found.out
        assert "1 compared by their list rows, 2 read whole" in found.out
        assert "audit sales: compared: 3/3 (100%)" in found.err
        report = (await cli(config, "audit", "--route", "sales", "--json")).json()
        assert {d["code"] for d in report["drifts"]} == {paid_mirror["InvoiceCode"], lost["InvoiceCode"]}
        assert report["fix"] is None

        fixed = await cli(config, "audit", "--route", "sales", "--fix", "--json")
        assert fixed.code == 0, fixed.out + fixed.err
        assert fixed.json()["fix"]["outcomes"] == {"done": 2}
        assert stack.target.invoice_by_code(paid_mirror["InvoiceCode"])["AmountPaid"] == Decimal("0.00")
        assert stack.target.invoice_by_code(lost["InvoiceCode"]) is not None
        clean = await cli(config, "audit", "--route", "sales")
        assert clean.code == 0 and "3 invoice(s) compared, 0 drifted" in clean.out
        fixes = [e for e in await stack.settled() if e.action == "audit"]
        assert sorted(e.payload["drift"][0] for e in fixes) == ["mirror", "paid"]
        assert {e.status for e in fixes} == {"done"}


async def test_a_dry_run_route_writes_nothing_and_shows_its_planned_steps(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with running_stack(redis_url, route_options={"dry_run": True}) as stack:
        (invoice,) = await new_invoices(stack, 1)
        stack.hostfact.add_invoice(DebtorCode="DB0001", InvoiceLines=HOSTFACT_SEED_LINES, Status=2)
        config = write_config(stack, tmp_path)

        (event,) = await stack.settled()
        shown = await cli(config, "events", "show", event.id)
        assert shown.code == 0, shown.err
        assert "planned (dry run, nothing written):" in shown.out and "1. CreateMirror()" in shown.out

        backfilled = await cli(config, "backfill", "--route", "sales")
        assert backfilled.code == 0 and "2 sync(s): 2 done" in backfilled.out
        drift = await cli(config, "audit", "--route", "sales", "--json")
        assert drift.code == 3 and len(drift.json()["drifts"]) == 2
        assert stack.target.count_calls(writes_only=True) == 0 and not stack.target.invoices
        (planned,) = [e for e in drift.json()["drifts"] if e["source_id"] == str(invoice)]
        assert planned["differences"][0]["target"] == "missing"


async def test_events_list_filters_by_time_route_and_source(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with running_stack(redis_url) as stack:
        await new_invoices(stack, 2)
        config = write_config(stack, tmp_path)
        cut = time.time()
        await asyncio.sleep(0.05)
        (later,) = await new_invoices(stack, 1)

        every = (
            await cli(config, "events", "list", "--route", "sales", "--source", "hostfact", "--json")
        ).json()
        assert len(every) == 3 and every[0]["payload"]["id"] == later, "newest first"
        recent = await cli(
            config, "events", "list", "--since", datetime.fromtimestamp(cut).isoformat(), "--json"
        )
        assert [e["payload"]["id"] for e in recent.json()] == [later]
        older = await cli(
            config, "events", "list", "--until", datetime.fromtimestamp(cut).isoformat(), "--json"
        )
        assert len(older.json()) == 2
        none = await cli(config, "events", "list", "--route", "purchase")
        assert none.code == 0 and "no events match" in none.out
        limited = await cli(config, "events", "list", "--limit", "1")
        assert len(limited.out.splitlines()) == 2 and "--limit shows more" in limited.err


def test_times_an_operator_may_give() -> None:
    now = 1_800_000_000.0
    assert parse_when("2h", now=now) == now - 7200
    assert parse_when("3d", now=now) == now - 3 * 86400
    assert parse_when("90m", now=now) == now - 5400
    assert parse_when("2026-01-31") == datetime(2026, 1, 31).timestamp()
    assert parse_when("2026-01-31T14:00:00+00:00") == 1769868000.0
    with pytest.raises(ValueError, match="is not a time"):
        parse_when("yesterday")


def _invoice(**changes: Any) -> Invoice:
    lines = (Line("Setupfee", Decimal(1), Decimal(150), Decimal(21)),)
    values: dict[str, Any] = {
        "id": "7",
        "code": "F0007",
        "status": Status.OPEN,
        "party": "DB0001",
        "date": "2026-01-31",
        "term": 14,
        "amount_incl": Decimal("181.50"),
        "amount_paid": Decimal("0.00"),
        "lines": lines,
    }
    return Invoice(**(values | changes))


def test_compare_names_each_field_that_differs() -> None:
    source = _invoice()
    assert compare(source, _invoice(id="70", reference="[factsync:hostfact:7]")) == []
    assert compare(source, None) == [Difference("mirror", "F0007", "missing")]
    drifted = _invoice(status=Status.PARTLY_PAID, amount_paid=Decimal("5.00"), term=30, lines=())
    assert [d.field for d in compare(source, drifted)] == ["status", "paid", "term", "lines"]
    (lines,) = [d for d in compare(source, drifted) if d.field == "lines"]
    assert lines.source == "1× Setupfee à 150 (21%)" and lines.target == "-"


def test_compare_knows_what_a_paid_purchase_invoice_and_a_credit_say() -> None:
    paid = _invoice(status=Status.PAID, amount_paid=Decimal("181.50"))
    # A paid HostFact purchase invoice shows 0 paid: that is no drift.
    assert compare(paid, _invoice(status=Status.PAID), paid_keeps_amount=False) == []
    assert [d.field for d in compare(paid, _invoice(status=Status.PAID))] == ["paid"]
    credited = _invoice(status=Status.CANCELLED)
    assert compare(credited, _invoice(), credited=True) == []
    assert [d.field for d in compare(credited, _invoice())] == ["status"]


async def test_discard_only_takes_failed_events(redis: Redis) -> None:
    from worker.operate import discard_events
    from worker.store import EventStore

    store = EventStore(redis, dedup_ttl=60, job_expiry_ms=60_000)
    accepted = await store.accept(source="hostfact", action="invoice_is_paid", payload={}, webhook_id="w1")
    (result,) = await discard_events(store, [accepted.event_id], by=OPERATOR, reason="no")
    assert not result.discarded and result.previous == "queued"
    await store.set_status(accepted.event_id, "failed", reason="refused")
    (result,) = await discard_events(store, [accepted.event_id], by=OPERATOR, reason="no")
    assert result.discarded
    assert await redis.zscore(keys.by_status("discarded"), accepted.event_id) is not None
    with pytest.raises(ValueError, match="needs a reason"):
        await discard_events(store, [accepted.event_id], by=OPERATOR, reason=" ")


async def test_a_failed_backfill_event_is_re_enqueued_onto_its_own_route(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill event names no hook: re-enqueued, the fan-out syncs its invoice on its recorded route."""
    from tests.conftest import make_settings
    from worker.documents import Documents
    from worker.jobs import fan_out
    from worker.operate import RETRYABLE, requeue_events
    from worker.store import EventStore

    settings = make_settings(redis_url)
    store = EventStore(redis, dedup_ttl=60, job_expiry_ms=60_000)
    event_id = await store.record(source="hostfact", action="backfill", payload={"id": 7}, routes=["sales"])
    await store.record_outcome(event_id, "sales", {"status": "failed", "reason": "refused"})
    (result,) = await requeue_events(store, [event_id], by=OPERATOR, allowed=RETRYABLE)
    assert result.verdict == "requeued"

    ctx = {
        "settings": settings,
        "store": store,
        "redis": redis,
        "documents": Documents(redis, lease_ms=1000, job_expiry_ms=60_000),
    }
    assert await fan_out(ctx, event_id) == "fanned out to 1 route(s)"
    event = await store.get(event_id)
    assert event is not None and event.status == "running" and event.routes == ["sales"]
    assert await done(redis.smembers(keys.pending("sales", "7"))) == {event_id.encode()}


async def test_a_backfill_without_a_worker_says_so_unless_told_not_to_wait(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import make_settings
    from worker import resync
    from worker.store import EventStore

    settings = make_settings(redis_url)
    wanted = [resync.ToSync("7", "F0007")]
    with pytest.raises(operate.NoWorker, match="--no-wait"):
        await resync.schedule_syncs(settings, redis, settings.route("sales"), wanted, action="backfill")
    assert await redis.zcard(keys.EVENTS) == 0, "nothing is recorded when nothing would run it"

    run = await resync.schedule_syncs(
        settings, redis, settings.route("sales"), wanted, action="backfill", wait=False
    )
    (event_id,) = run.event_ids
    event = await EventStore(redis, dedup_ttl=60, job_expiry_ms=60_000).get(event_id)
    assert event is not None and (event.status, event.routes, event.payload["id"]) == (
        "running",
        ["sales"],
        7,
    )
    assert await done(redis.scard(keys.pending("sales", "7"))) == 1 and await redis.zcard(keys.QUEUE) == 1


async def test_an_event_in_a_retry_backoff_shows_as_waiting_not_running(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    retry = {"max_tries": 5, "base_delay": 60, "max_delay": 60, "max_span": 3600}
    async with running_stack(redis_url, retry=retry) as stack:
        (invoice,) = await new_invoices(stack, 1)
        stack.target.faults.inject("http_503", times=50)
        await stack.call("invoice", "markaspaid", Identifier=invoice)
        config = write_config(stack, tmp_path)

        async def backing_off() -> Any:
            for _ in range(100):
                listed = (await cli(config, "events", "list", "--action", "invoice_is_paid", "--json")).json()
                if listed and listed[0]["waiting_until"]:
                    return listed[0]
                await asyncio.sleep(0.05)
            raise AssertionError("the sync never went into its backoff")

        event = await backing_off()
        assert event["status"] == "running" and event["waiting_reason"] == "retry backoff"
        table = await cli(config, "events", "list", "--action", "invoice_is_paid")
        assert " waiting " in table.out and " running " not in table.out
        status = await cli(config, "status")
        assert "running 1 (of which 1 waiting for a later try)" in status.out
        shown = await cli(config, "events", "show", event["id"])
        assert "retry backoff, next try at" in shown.out

        # Asked to retry, a waiting event offers to run now; --now does, without waiting out the minute.
        offered = await cli(config, "failed", "retry", event["id"])
        assert offered.code == 0 and "--now runs it at once" in offered.out
        stack.target.faults.clear()
        hurried = await cli(config, "failed", "retry", "--now", event["id"])
        assert hurried.code == 0 and "its waiting sync runs now" in hurried.out, hurried.out + hurried.err
        settled = await stack.settled(within=10)
        assert {e.status for e in settled if e.action == "invoice_is_paid"} == {"done"}


async def test_a_backfill_waiting_on_a_ban_pause_says_so(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with running_stack(redis_url) as stack:
        stack.hostfact.add_debtor(CompanyName="Company X")
        stack.hostfact.add_invoice(DebtorCode="DB0001", InvoiceLines=HOSTFACT_SEED_LINES, Status=2)
        config = write_config(stack, tmp_path)
        await SharedRateLimit(redis, {}).pause("target", 4)

        ran = await cli(config, "backfill", "--route", "sales")

        assert ran.code == 0, ran.out + ran.err
        assert "waiting: calls to target are paused" in ran.err, "not a still progress bar"
        assert "1 sync(s): 1 done" in ran.out
