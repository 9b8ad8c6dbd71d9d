"""Bulk audit and backfill (issue 12) on the simulator: calls per invoice per side, wall time against the
floor the API budget sets, and how long a live hook waits while a bulk run keeps the budget busy.

Parts (a realistic mix: open, part-paid, paid by payments, marked paid, credited; a third with a
subscription line; 50 debtors; 50 ms API latency on every call of both simulated administrations):

  scaled    the backfill of N new mirrors, N = 1 000, then 4 000 and 15 000 more (5 000, 20 000 in all), at a
            SCALED budget (--scale x the defaults, workers' window --scaled-window): calls per invoice per
            side, wall time and its ratio to the floor (the calls at that budget). It also builds, in step,
            the target the audit part reads.
  audit     after each step above, `audit` of the whole administration at the DEFAULT budgets (source 300,
            target 150 calls a minute): list calls per 1 000 invoices per side, `show`s, wall time; then again
            with 1 % of the mirrors drifted (paid amount or date): one `show` per drifted invoice per side.
  backfill  the backfill of --backfill-n new mirrors at the DEFAULT budgets: target calls per new mirror by
            its state, wall time and its ratio to the floor; a live hook (a new invoice) every --hook-every s
            meanwhile: hook received -> its sync started, and -> its mirror made.

    .venv/bin/python bench/bulk.py --json bench/results/bulk.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, median

DEFAULT_SOURCE = 300
# The production retry policy (worker.config.RetrySettings), not the tests' quick one: a sync that meets a
# number held a moment by a credit invoice the target numbered backs off as it would in production.
PRODUCTION_RETRY = {"max_tries": 10, "base_delay": 1.0, "max_delay": 300.0, "max_span": 6 * 3600.0}
DEFAULT_TARGET = 150
LATENCY = 0.05
PLAIN = [
    {"Description": "Setupfee", "PriceExcl": "150", "TaxPercentage": "21"},
    {"Description": "Domain example.com", "PriceExcl": "15", "TaxPercentage": "21"},
]
SUBSCRIPTION = {
    "Description": "Hosting Basic",
    "PriceExcl": "7.50",
    "TaxPercentage": "21",
    "PeriodicType": "period",
    "Periods": 12,
    "Periodic": "m",
    "StartPeriod": "2026-01-01",
}
# The mix, in tenths of a hundred: 50 open, 15 part-paid, 20 paid by payments, 10 marked paid, 5 credited.
MIX = ["open"] * 50 + ["part"] * 15 + ["paid"] * 20 + ["marked"] * 10 + ["credited"] * 5
# Target writes a new mirror of each state needs (besides its `add`): the payment steps, or for a credited
# one the credit and the renumbering of the credit invoice the target makes.
STEPS = {"open": 0, "part": 1, "paid": 1, "marked": 1, "credited": 2}


def seed(
    stack: Any, first: int, count: int, debtors: int = 50
) -> tuple[dict[str, list[int]], list[tuple[str, str]]]:
    """``count`` invoices in the source, quietly (no hooks): the realistic mix; credited ones get the link a
    hook would have left (credits.remember), so their credit notes are numbered as the source's."""
    source = stack.hostfact
    while len(source.debtors) < debtors:
        source.add_debtor(CompanyName=f"Customer {len(source.debtors) + 1}")
    codes = [record["DebtorCode"] for record in source.debtors.values()]
    made: dict[str, list[int]] = {kind: [] for kind in STEPS}
    links: list[tuple[str, str]] = []
    for number in range(first, first + count):
        # 37 is prime to 100: each hundred holds the whole mix, and a few dozen a fair part of it.
        kind = MIX[number * 37 % len(MIX)]
        lines = [*PLAIN, SUBSCRIPTION] if number % 3 == 0 else PLAIN
        invoice = source.add_invoice(DebtorCode=codes[number % len(codes)], InvoiceLines=lines, Status=2)
        ident = invoice["Identifier"]
        if kind == "part":
            source.execute("invoice", "partpayment", {"Identifier": ident, "AmountPaid": "50"})
        elif kind == "paid":
            paid = str(invoice["AmountIncl"])
            source.execute("invoice", "partpayment", {"Identifier": ident, "AmountPaid": paid})
        elif kind == "marked":
            source.execute("invoice", "markaspaid", {"Identifier": ident})
        elif kind == "credited":
            credit = source.execute("invoice", "credit", {"Identifier": ident}).record
            assert credit is not None
            links.append((str(ident), str(credit["Identifier"])))
        made[kind].append(ident)
    return made, links


def counted(admin: Any, mark: int) -> Counter[str]:
    """Calls since ``mark`` by controller and action; a `list` is a page of a listing (no search, or the
    search for every marker of the source) or a search for one document."""

    def name(call: Any) -> str:
        if call.action != "list":
            return f"{call.controller} {call.action}"
        wanted = str(call.params.get("searchfor", ""))
        return f"{call.controller} list " + ("page" if not wanted or wanted.endswith(":") else "search")

    return Counter(name(call) for call in admin.calls[mark:])


def per_invoice(counts: Counter[str], invoices: int) -> float:
    return round(sum(counts.values()) / invoices, 3) if invoices else float("nan")


async def scaled_and_audit(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    from redis.asyncio import Redis

    from tasks import credits
    from tests.stack import running_stack
    from worker import resync
    from worker.idmap import RedisIdMap

    out: dict[str, Any] = {"scaled": [], "audit": []}
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    source_rate, target_rate = DEFAULT_SOURCE * args.scale, DEFAULT_TARGET * args.scale
    async with running_stack(
        redis_url,
        budget=source_rate,
        target_budget=target_rate,
        max_jobs=max(20, args.scaled_window + 4),
        retry=PRODUCTION_RETRY,
    ) as stack:
        route = stack.settings.route("sales")
        ids = RedisIdMap(redis, route.name)
        for side in (stack.hostfact, stack.target):
            side.faults.inject("latency", seconds=LATENCY)
        values = stack.settings.model_dump()
        values["sources"]["hostfact"]["rate_limit_per_minute"] = DEFAULT_SOURCE
        values["targets"]["target"]["rate_limit_per_minute"] = DEFAULT_TARGET
        default_settings = type(stack.settings)(**values)
        total = 0
        for size in args.sizes:
            new = size - total
            made, links = seed(stack, total + 1, new)
            for original, credit in links:
                await ids.put(credits.CREDITED_BY, original, credit)
            total = size
            marks = len(stack.hostfact.calls), len(stack.target.calls)
            started = time.monotonic()
            run = await resync.backfill(stack.settings, redis, route, window=args.scaled_window)
            wall = time.monotonic() - started
            source_calls, target_calls = counted(stack.hostfact, marks[0]), counted(stack.target, marks[1])
            floor = max(
                60 * sum(source_calls.values()) / source_rate, 60 * sum(target_calls.values()) / target_rate
            )
            row = {
                "invoices": size,
                "new_mirrors": new,
                "in_step_before": run.in_step,
                "outcomes": run.outcomes,
                "budget_per_min": {"source": source_rate, "target": target_rate, "scale": args.scale},
                "window": args.scaled_window,
                "wall_s": round(wall, 1),
                "floor_s": round(floor, 1),
                "wall_to_floor": round(wall / floor, 3),
                "source_calls_per_new_mirror": per_invoice(source_calls, new),
                "target_calls_per_new_mirror": per_invoice(target_calls, new),
                "target_calls": dict(target_calls),
                "source_calls": dict(source_calls),
                "target_steps_floor_per_new_mirror": round(
                    sum((1 + STEPS[kind]) * len(made[kind]) for kind in STEPS) / new, 3
                ),
            }
            out["scaled"].append(row)
            print("scaled", json.dumps(row), flush=True)
            out["audit"].append(await audit_row(stack, redis, default_settings, route, size, args))
    await redis.aclose()
    return out


async def audit_row(
    stack: Any, redis: Any, settings: Any, route: Any, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    from worker import resync

    row: dict[str, Any] = {"invoices": size, "budget_per_min": {"source": 300, "target": 150}}
    for label, drifted in (("in_step", 0), ("drift_1pct", max(1, size // 100))):
        planted = plant(stack, drifted)
        await asyncio.sleep(61 if args.cool_down else 0)  # a full budget, as an operator would find it
        marks = len(stack.hostfact.calls), len(stack.target.calls)
        started = time.monotonic()
        report = await resync.audit(settings, redis, route)
        wall = time.monotonic() - started
        for restore in planted:
            restore()
        source_calls, target_calls = counted(stack.hostfact, marks[0]), counted(stack.target, marks[1])
        row[label] = {
            "wall_s": round(wall, 1),
            "drift_planted": drifted,
            "drift_found": len(report.drifts),
            "by_header": report.by_header,
            "by_lines": report.by_lines,
            "source_calls": dict(source_calls),
            "target_calls": dict(target_calls),
            "list_pages_per_1000_per_side": {
                "source": round(1000 * source_calls["invoice list page"] / size, 2),
                "target": round(1000 * target_calls["invoice list page"] / size, 2),
            },
        }
        print("audit", size, label, json.dumps(row[label]), flush=True)
    return row


def plant(stack: Any, count: int) -> list[Callable[[], None]]:
    """Drift ``count`` mirrors by hand (every other a paid amount, else a date); the undo of each."""
    mirrors = [m for m in stack.target.invoices.values() if m["Status"] in (2, 3)]
    undo: list[Callable[[], None]] = []
    for number, mirror in enumerate(mirrors[:: max(1, len(mirrors) // max(count, 1))][:count]):
        key = "AmountPaid" if number % 2 == 0 else "Date"
        before = mirror[key]
        mirror[key] = before + Decimal("1.00") if key == "AmountPaid" else "2020-01-01 00:00:00"

        def restore(mirror: dict[str, Any] = mirror, key: str = key, before: Any = before) -> None:
            mirror[key] = before

        undo.append(restore)
    return undo


async def backfill_default(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    from redis.asyncio import Redis

    from tasks import credits
    from tests.stack import LINES, running_stack
    from worker import keys, resync
    from worker.idmap import RedisIdMap

    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    async with running_stack(
        redis_url, budget=DEFAULT_SOURCE, target_budget=DEFAULT_TARGET, retry=PRODUCTION_RETRY
    ) as stack:
        route = stack.settings.route("sales")
        ids = RedisIdMap(redis, route.name)
        made, links = seed(stack, 1, args.backfill_n)
        for original, credit in links:
            await ids.put(credits.CREDITED_BY, original, credit)
        for side in (stack.hostfact, stack.target):
            side.faults.inject("latency", seconds=LATENCY)
        marks = len(stack.hostfact.calls), len(stack.target.calls)
        hooks: list[int] = []
        started = time.monotonic()
        backfill = asyncio.create_task(resync.backfill(stack.settings, redis, route))

        async def fire_hooks() -> None:
            await asyncio.sleep(args.hook_every)
            while not backfill.done():
                answer = await stack.call("invoice", "add", DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
                hooks.append(int(answer["invoice"]["Identifier"]))
                await asyncio.sleep(args.hook_every)

        firing = asyncio.create_task(fire_hooks())
        run = await backfill
        wall = time.monotonic() - started
        await firing
        events = await stack.settled(within=120)
        hook_events = [e for e in events if e.action == "invoice_is_created"]
        waits, done_after, detail = [], [], []
        for event in hook_events:
            tries = [json.loads(t) for t in await redis.lrange(keys.tries(event.id), 0, -1)]
            if tries:
                first = tries[0]
                waits.append(first["at"] - first["ms"] / 1000 - event.received_at)
                done_after.append(tries[-1]["at"] - event.received_at)
                detail.append([round(waits[-1], 2), round(done_after[-1], 2), len(tries), first["calls"]])
        # The hooks' own syncs, and the invoice adds that fired them, are not the backfill's.
        hook_calls: Counter[str] = Counter()
        for event in hook_events:
            tries = [json.loads(t) for t in await redis.lrange(keys.tries(event.id), 0, -1)]
            for call in [call for one in tries for call in one.get("calls", [])]:
                name, _, what = call.partition(": ")
                call_name = what.split()[0].replace(".", " ")
                # A sync's list calls are searches for one document (a marker, a debtor code).
                hook_calls[f"{name} {call_name}" + (" search" if call_name.endswith(" list") else "")] += 1
        source_calls, target_calls = counted(stack.hostfact, marks[0]), counted(stack.target, marks[1])
        for key, count in hook_calls.items():
            administration, _, call = key.partition(" ")
            (source_calls if administration == "hostfact" else target_calls)[call] -= count
        source_calls["invoice add"] -= len(hooks)
        source_calls, target_calls = +source_calls, +target_calls
        floor = max(
            60 * sum(source_calls.values()) / DEFAULT_SOURCE, 60 * sum(target_calls.values()) / DEFAULT_TARGET
        )
        # The budget is shared: what the hooks' syncs spent of it meanwhile is not the backfill's to use.
        with_hooks = max(
            60
            * (
                sum(source_calls.values())
                + sum(c for k, c in hook_calls.items() if k.startswith("hostfact "))
            )
            / DEFAULT_SOURCE,
            60
            * (sum(target_calls.values()) + sum(c for k, c in hook_calls.items() if k.startswith("target ")))
            / DEFAULT_TARGET,
        )
        new = args.backfill_n
        debtor_calls = sum(count for key, count in target_calls.items() if key.startswith("debtor "))
        row = {
            "invoices": new,
            "mix": {kind: len(made[kind]) for kind in STEPS},
            "budget_per_min": {"source": DEFAULT_SOURCE, "target": DEFAULT_TARGET},
            "outcomes": run.outcomes,
            "wall_s": round(wall, 1),
            "floor_s": round(floor, 1),
            "wall_to_floor": round(wall / floor, 3),
            "floor_with_hooks_s": round(with_hooks, 1),
            "wall_to_floor_with_hooks": round(wall / with_hooks, 3),
            "source_calls_per_new_mirror": per_invoice(source_calls, new),
            "target_calls_per_new_mirror": per_invoice(target_calls, new),
            "target_calls_per_new_mirror_without_debtors": round(
                (sum(target_calls.values()) - debtor_calls) / new, 3
            ),
            "target_steps_floor_per_new_mirror": round(
                sum((1 + STEPS[kind]) * len(made[kind]) for kind in STEPS) / new, 3
            ),
            "source_calls": dict(source_calls),
            "target_calls": dict(target_calls),
            "live_hooks": len(hook_events),
            "hook_to_sync_start_s": {
                "median": round(median(waits), 2),
                "max": round(max(waits), 2) if waits else None,
            },
            "hook_to_mirror_s": {
                "median": round(median(done_after), 2),
                "max": round(max(done_after), 2) if done_after else None,
            },
            "hooks": detail,
        }
        print("backfill", json.dumps(row), flush=True)
    await redis.aclose()
    return row


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    from worker.embedded_redis import EmbeddedRedis
    from worker.logs import configure_logging

    configure_logging(json=True, level="WARNING")
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        if "backfill" in parts:
            result["backfill_default_budget"] = await backfill_default(args, server.url)
        if parts & {"scaled", "audit"}:
            result.update(await scaled_and_audit(args, server.url))
    result["machine_after"] = machine()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="backfill,scaled,audit")
    parser.add_argument(
        "--sizes", type=lambda text: [int(n) for n in text.split(",")], default=[1000, 5000, 20000]
    )
    parser.add_argument("--scale", type=int, default=20, help="budget multiple for the scaled backfill")
    parser.add_argument("--scaled-window", type=int, default=16, help="backfill window at the scaled budget")
    parser.add_argument("--backfill-n", type=int, default=300, help="new mirrors at the default budget")
    parser.add_argument("--hook-every", type=float, default=8.0, help="seconds between live hooks")
    parser.add_argument("--cool-down", action="store_true", help="wait a minute before each audit")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.pop("REDIS_URL", None)
    result = asyncio.run(amain(args))
    print(json.dumps(result, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
