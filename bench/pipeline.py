# ruff: noqa: ASYNC110, ASYNC220
"""Pipeline benchmark: accepted -> done throughput, API economy, coalescing, rate budget and latency.

Parts (``--parts``, default all):
  throughput  events/s from accepted to done against the simulator (in this process) with 0 ms and 50 ms
              API latency, 1 and 4 worker processes (``python -m worker.cli -c CONFIG worker``), median over
              --runs; ratio to the ideal (processes x max_jobs / (API calls per event x latency)) and to raw
              arq jobs/s (a no-op job doing one INCR, same Redis, same processes/max_jobs/poll_delay);
              CPU seconds per event of the worker processes (psutil).
  economy     API calls per event by action (in-process listener + worker, hooks fired by the simulated
              HostFact), and coalescing: 100 signed hooks for one invoice within a second -> syncs.
  latency     hook accepted -> target written, p50/p99, one payment at a time on an idle system.
  budget      4 worker processes sharing a target limited to --rate calls/min; the simulator enforces it
              with WeFact's 403 ban: achieved calls/min and the number of 403s (--budget-runs N: the
              median over N runs of --budget-seconds each, 403s summed).

    python bench/pipeline.py --parts throughput,economy,latency,budget --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    HOOK_SECRET,
    ROOT,
    SOURCE_KEY,
    TARGET_KEY,
    WorkerPool,
    config_text,
    machine,
    median,
    percentile,
)

LINES = [
    {"Description": "Hosting", "PriceExcl": "10", "TaxPercentage": "21"},
    {"Description": "Domain", "PriceExcl": "15", "TaxPercentage": "21"},
]


def seed(source: Any, count: int) -> list[dict[str, Any]]:
    """``count`` sent invoices in the simulated HostFact (quietly: no hooks, no call log)."""
    debtors = [source.add_debtor(CompanyName=f"Company {i}") for i in range(max(1, count // 10))]
    return [
        source.add_invoice(DebtorCode=debtors[i % len(debtors)]["DebtorCode"], InvoiceLines=LINES, Status=2)
        for i in range(count)
    ]


async def wait_workers_ready(redis: Any, count: int, within: float = 60) -> None:
    """arq writes its health-check key once a worker runs; factsync's heartbeat registers workers too."""
    deadline = time.monotonic() + within
    from worker import keys

    while time.monotonic() < deadline:
        found = 0
        async for _ in redis.scan_iter(match=keys.health_check() + "*"):
            found += 1
        if found >= 1:
            break
        await asyncio.sleep(0.1)
    # Every process needs its own start-up; the key above is shared, so give the rest a moment.
    await asyncio.sleep(1.5 + 0.5 * count)


async def throughput_run(
    redis_url: str, workdir: Path, latency: float, processes: int, events: int, max_jobs: int
) -> dict[str, Any]:
    from redis.asyncio import Redis

    from tasks.simulator import SimAdministration, run_simulator
    from tasks.simulator.invoices import hook_ref
    from worker.store import EventStore

    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    source = SimAdministration("hostfact", "hostfact", SOURCE_KEY)
    target = SimAdministration("wefact", "wefact", TARGET_KEY)
    invoices = seed(source, events)
    if latency:
        source.faults.inject("latency", seconds=latency)
        target.faults.inject("latency", seconds=latency)
    async with run_simulator([source, target]) as sim:
        config = workdir / f"pipeline-{processes}-{latency}.toml"
        config.write_text(
            config_text(redis_url, sim.api_url("hostfact"), sim.api_url("wefact"), max_jobs=max_jobs)
        )
        pool = WorkerPool(config, workdir / "workers.log")
        pool.start(processes)
        try:
            await wait_workers_ready(redis, processes)
            store = EventStore(redis, dedup_ttl=3600, job_expiry_ms=3_600_000)
            cpu0 = pool.cpu_seconds()
            start = time.perf_counter()
            for i, invoice in enumerate(invoices):
                await store.accept(
                    source="hostfact",
                    action="invoice_is_created",
                    payload=hook_ref(invoice),
                    webhook_id=f"msg_tp_{i}",
                )
            accepted_in = time.perf_counter() - start
            deadline = time.monotonic() + 600
            while True:
                finished = sum([await store.count(s) for s in ("done", "failed", "ignored")])
                if finished >= events or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
            cpu = pool.cpu_seconds() - cpu0
            failed = await store.count("failed")
        finally:
            pool.stop()
    await redis.aclose()
    calls = len(source.calls) + len(target.calls)
    per_event = calls / events
    concurrency = processes * max_jobs
    ideal = concurrency / (per_event * latency) if latency else float("nan")
    return {
        "events_per_s": events / elapsed,
        "elapsed_s": elapsed,
        "accept_s": accepted_in,
        "finished": finished,
        "failed": failed,
        "api_calls_per_event": per_event,
        "ideal_events_per_s": ideal,
        "cpu_ms_per_event": cpu / events * 1000,
    }


NOOP_WORKER = """
import asyncio, sys
from arq.worker import Worker
from arq.connections import RedisSettings

async def noop(ctx):
    await ctx['redis'].incr('bench:noop:done')

async def startup(ctx):
    await ctx['redis'].incr('bench:noop:ready')

w = Worker(functions=[noop], redis_settings=RedisSettings.from_dsn(sys.argv[1]), queue_name='bench:noop',
           max_jobs=int(sys.argv[2]), poll_delay=float(sys.argv[3]), keep_result=0, on_startup=startup,
           handle_signals=True)
w.run()
"""


async def arq_noop_run(redis_url: str, processes: int, jobs: int, max_jobs: int) -> dict[str, Any]:
    from arq.jobs import serialize_job
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", NOOP_WORKER, redis_url, str(max_jobs), "0.01"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    try:
        deadline = time.monotonic() + 60
        while int(await redis.get("bench:noop:ready") or 0) < processes and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        import psutil

        def cpu() -> float:
            return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)

        cpu0 = cpu()
        start = time.perf_counter()
        now = int(time.time() * 1000)
        pipe = redis.pipeline(transaction=False)
        for i in range(jobs):
            job_id = f"noop{i}"
            pipe.psetex(f"arq:job:{job_id}", 3_600_000, serialize_job("noop", (), {}, None, now))
            pipe.zadd("bench:noop", {job_id: now})
        await pipe.execute()
        while int(await redis.get("bench:noop:done") or 0) < jobs:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - start
        cpu_s = cpu() - cpu0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        await redis.aclose()
    return {"jobs_per_s": jobs / elapsed, "cpu_ms_per_job": cpu_s / jobs * 1000}


async def part_throughput(args: argparse.Namespace, redis_url: str, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for processes in (1, 4):
        noop = [
            await arq_noop_run(redis_url, processes, args.noop_jobs, args.max_jobs) for _ in range(args.runs)
        ]
        out[f"arq_noop_{processes}p"] = {
            "jobs_per_s": round(median([n["jobs_per_s"] for n in noop]), 1),
            "cpu_ms_per_job": round(median([n["cpu_ms_per_job"] for n in noop]), 3),
        }
        print(f"arq no-op, {processes} process(es): {out[f'arq_noop_{processes}p']}", flush=True)
        for latency in (0.0, 0.05):
            runs = []
            for _ in range(args.runs):
                run = await throughput_run(redis_url, workdir, latency, processes, args.events, args.max_jobs)
                print(f"  {processes}p {latency * 1000:.0f}ms: {json.dumps(_round(run))}", flush=True)
                runs.append(run)
            medians = {k: round(median([r[k] for r in runs]), 3) for k in runs[0]}
            summary: dict[str, float | None] = dict(medians)
            summary["ratio_to_ideal"] = (
                round(medians["events_per_s"] / medians["ideal_events_per_s"], 3) if latency else None
            )
            summary["ratio_to_arq_noop"] = round(
                medians["events_per_s"] / out[f"arq_noop_{processes}p"]["jobs_per_s"], 4
            )
            summary["cpu_ms_per_event_vs_50ms_round_trip"] = round(medians["cpu_ms_per_event"] / 50, 3)
            out[f"{processes}p_{latency * 1000:.0f}ms"] = summary
            print(f"{processes}p {latency * 1000:.0f}ms median: {summary}", flush=True)
    return out


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


async def part_economy_latency(args: argparse.Namespace, redis_url: str, parts: set[str]) -> dict[str, Any]:
    import aiohttp

    from tests.conftest import sign
    from tests.stack import running_stack

    out: dict[str, Any] = {}
    from redis.asyncio import Redis

    r = Redis.from_url(redis_url)
    await r.flushdb()
    await r.aclose()
    async with running_stack(redis_url) as stack:
        source, target = stack.hostfact, stack.target

        def mark() -> tuple[int, int]:
            return len(source.calls), len(target.calls)

        def since(m: tuple[int, int]) -> dict[str, int]:
            counts: Counter[str] = Counter()
            for call in source.calls[m[0] :]:
                counts[f"source {call.controller} {call.action}"] += 1
            for call in target.calls[m[1] :]:
                counts[f"target {call.controller} {call.action}"] += 1
            return dict(counts)

        # The stack's own calls to the source (as the "user") are counted too; take them out.
        def economy(counts: dict[str, int], user_calls: dict[str, int]) -> dict[str, int]:
            return {k: v - user_calls.get(k, 0) for k, v in counts.items() if v - user_calls.get(k, 0)}

        if "economy" in parts:
            steps: dict[str, Any] = {}
            m = mark()
            debtor = (await stack.call("debtor", "add", CompanyName="Economy BV"))["debtor"]
            await stack.settled()
            m = mark()
            invoice = (
                await stack.call(
                    "invoice", "add", DebtorCode=debtor["DebtorCode"], InvoiceLines=LINES, Status=2
                )
            )["invoice"]
            await stack.settled()
            steps["invoice_is_created (new mirror, debtor exists in source only)"] = economy(
                since(m), {"source invoice add": 1}
            )
            ident = invoice["Identifier"]
            m = mark()
            await stack.call("invoice", "partpayment", Identifier=ident, AmountPaid="5.25")
            await stack.settled()
            steps["invoice_is_partly_paid (existing mirror)"] = economy(
                since(m), {"source invoice partpayment": 1}
            )
            m = mark()
            await stack.call("invoice", "markaspaid", Identifier=ident)
            await stack.settled()
            steps["invoice_is_paid (existing mirror)"] = economy(since(m), {"source invoice markaspaid": 1})
            m = mark()
            await stack.call("invoice", "sendbyemail", Identifier=ident)
            await stack.settled()
            steps["invoice_is_sent (mirror in step)"] = economy(since(m), {"source invoice sendbyemail": 1})
            inv2 = (
                await stack.call(
                    "invoice", "add", DebtorCode=debtor["DebtorCode"], InvoiceLines=LINES, Status=2
                )
            )["invoice"]
            await stack.settled()
            m = mark()
            await stack.call("invoice", "credit", Identifier=inv2["Identifier"])
            await stack.settled()
            steps["invoice_is_created + invoice_is_credited (credit note)"] = economy(
                since(m), {"source invoice credit": 1}
            )
            out["calls_per_event"] = {k: {"total": sum(v.values()), **v} for k, v in steps.items()}
            print(json.dumps(out["calls_per_event"], indent=1), flush=True)

            # Coalescing: 100 signed hooks for one invoice within a second.
            inv3 = (
                await stack.call(
                    "invoice", "add", DebtorCode=debtor["DebtorCode"], InvoiceLines=LINES, Status=2
                )
            )["invoice"]
            await stack.settled()
            m = mark()
            url = f"http://127.0.0.1:{stack.settings.listen_port}/hooks/hostfact"
            body = json.dumps(
                {
                    "action": "invoice_is_paid",
                    "data": {"id": inv3["Identifier"], "Debtor": 1, "InvoiceCode": "X"},
                }
            ).encode()
            started = time.perf_counter()
            async with aiohttp.ClientSession() as session:

                async def post() -> int:
                    async with session.post(url, data=body, headers=sign(body, secret=HOOK_SECRET_T)) as resp:
                        return resp.status

                statuses = await asyncio.gather(*(post() for _ in range(100)))
            posted_in = time.perf_counter() - started
            await stack.settled(within=60)
            syncs = sum(
                1
                for call in source.calls[m[0] :]
                if (call.controller, call.action) == ("invoice", "show")
                and str(call.params.get("Identifier")) == str(inv3["Identifier"])
            )
            out["coalescing"] = {
                "hooks": 100,
                "accepted": sum(1 for s in statuses if s == 202),
                "posted_within_s": round(posted_in, 3),
                "syncs (source invoice show calls)": syncs,
                "target_ok (<= 3)": syncs <= 3,
            }
            print(json.dumps(out["coalescing"]), flush=True)

        if "latency" in parts:
            # One payment at a time, spaced so that the shared rate limit (150 calls/min on the target by
            # default, burst 5) is never what the sample waits for: an idle system.
            debtor = (await stack.call("debtor", "add", CompanyName="Latency BV"))["debtor"]
            made = []
            for _ in range(args.latency_samples):
                made.append(
                    (
                        await stack.call(
                            "invoice", "add", DebtorCode=debtor["DebtorCode"], InvoiceLines=LINES, Status=2
                        )
                    )["invoice"]
                )
            await stack.settled(within=300)
            samples = []
            for inv in made:
                await asyncio.sleep(args.latency_gap)
                before = len(target.calls)
                await stack.call("invoice", "partpayment", Identifier=inv["Identifier"], AmountPaid="1.00")
                events = await stack.settled()
                event = max(
                    (e for e in events if e.action == "invoice_is_partly_paid"), key=lambda e: e.received_at
                )
                writes = [c for c in target.calls[before:] if c.action == "partpayment" and c.applied]
                if writes:
                    samples.append((writes[0].started + writes[0].duration - event.received_at) * 1000)
            out["latency_ms"] = {
                "samples": len(samples),
                "p50": round(percentile(samples, 50), 1),
                "p99": round(percentile(samples, 99), 1),
                "max": round(max(samples), 1) if samples else None,
                "target_p50_lt_300": percentile(samples, 50) < 300,
            }
            print(json.dumps(out["latency_ms"]), flush=True)
    return out


HOOK_SECRET_T = ""


async def part_budget(args: argparse.Namespace, redis_url: str, workdir: Path) -> dict[str, Any]:
    from redis.asyncio import Redis

    from tasks.simulator import SimAdministration, run_simulator
    from tasks.simulator.invoices import hook_ref
    from worker.store import EventStore

    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    source = SimAdministration("hostfact", "hostfact", SOURCE_KEY)
    target = SimAdministration(
        "wefact", "wefact", TARGET_KEY, rate_limit_per_minute=args.rate, ban_seconds=600
    )
    # Enough work to keep the budget busy for the whole run (about 3-5 target calls per new invoice).
    count = int(args.rate * args.budget_seconds / 60) + 50
    invoices = seed(source, count)
    async with run_simulator([source, target]) as sim:
        config = workdir / "budget.toml"
        config.write_text(
            config_text(redis_url, sim.api_url("hostfact"), sim.api_url("wefact"), target_rate=args.rate)
        )
        pool = WorkerPool(config, workdir / "budget-workers.log")
        pool.start(4)
        try:
            await wait_workers_ready(redis, 4)
            store = EventStore(redis, dedup_ttl=3600, job_expiry_ms=3_600_000)
            for i, invoice in enumerate(invoices):
                await store.accept(
                    source="hostfact",
                    action="invoice_is_created",
                    payload=hook_ref(invoice),
                    webhook_id=f"b{i}",
                )
            start = time.time()
            await asyncio.sleep(args.budget_seconds)
            end = time.time()
        finally:
            pool.stop()
    await redis.aclose()
    calls = [c for c in target.calls if start <= c.started < end]
    banned = sum(1 for c in target.calls if c.outcome == "banned" or c.http_status == 403)
    # Whole clock-aligned minutes inside the run (the simulator's windows).
    per_minute = Counter(int(c.started) // 60 for c in calls)
    full = [n for minute, n in per_minute.items() if minute * 60 >= start and minute * 60 + 60 <= end]
    achieved = len(calls) / (end - start) * 60
    out = {
        "rate_limit_per_minute": args.rate,
        "seconds": args.budget_seconds,
        "target_calls": len(calls),
        "achieved_calls_per_min": round(achieved, 1),
        "achieved_ratio": round(achieved / args.rate, 3),
        "full_clock_minutes": full,
        "http_403": banned,
        "verdict (>= 90 % and zero 403)": achieved >= 0.9 * args.rate and banned == 0,
    }
    print(json.dumps(out), flush=True)
    return out


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    global HOOK_SECRET_T
    from tests.conftest import HOOK_SECRET as test_secret
    from worker.embedded_redis import EmbeddedRedis

    HOOK_SECRET_T = test_secret
    from worker.logs import configure_logging

    configure_logging(json=True, level="WARNING")
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        workdir = Path(tmp)
        if "throughput" in parts:
            result["throughput"] = await part_throughput(args, server.url, workdir)
        if parts & {"economy", "latency"}:
            result.update(await part_economy_latency(args, server.url, parts))
        if "budget" in parts:
            runs = [await part_budget(args, server.url, workdir) for _ in range(args.budget_runs)]
            achieved = median([r["achieved_calls_per_min"] for r in runs])
            http_403 = sum(r["http_403"] for r in runs)
            result["budget"] = {
                "runs": runs,
                "rate_limit_per_minute": args.rate,
                "median_achieved_calls_per_min": achieved,
                "median_achieved_ratio": round(achieved / args.rate, 3),
                "http_403_all_runs": http_403,
                "verdict (median >= 90 % and zero 403)": achieved >= 0.9 * args.rate and http_403 == 0,
            }
        log = workdir / "workers.log"
        if log.exists():
            text = log.read_text()
            leaked = [s for s in (SOURCE_KEY, TARGET_KEY, HOOK_SECRET) if s in text]
            result["secrets_in_worker_logs"] = leaked
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="throughput,economy,latency,budget")
    parser.add_argument("--runs", type=int, default=3, help="runs per throughput configuration (median)")
    parser.add_argument("--events", type=int, default=300, help="events per throughput run")
    parser.add_argument("--noop-jobs", type=int, default=2000, help="jobs per raw arq run")
    parser.add_argument("--max-jobs", type=int, default=20, help="max_jobs per worker process")
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--latency-gap", type=float, default=2.0, help="idle seconds between latency samples")
    parser.add_argument("--rate", type=int, default=120, help="target calls/min for the budget part")
    parser.add_argument("--budget-seconds", type=float, default=70.0)
    parser.add_argument("--budget-runs", type=int, default=1, help="budget runs (median, 403s summed)")
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
