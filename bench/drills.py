"""Fault drills: a workload through the whole pipeline while something breaks, then a verdict.

Every drill: an embedded Redis of its own, the simulator (HostFact source that fires signed hooks inline,
WeFact target) and the listener in this process, workers as ``python -m worker.cli worker`` processes. The
workload: --invoices invoices made in the simulated HostFact by --users concurrent users, each paid in
1-2 part payments, half marked paid, a tenth credited (about 3.5 events per invoice).

Verdict (all must hold): every hook the listener acknowledged is an event in the store; every event is
done, ignored with a reason or failed with a reason (failed ones are re-enqueued once, as an operator would,
and must then settle); the target mirrors the source invoice by invoice (tests/ledgers.py); no payment
booked twice (the mirror's AmountPaid history follows the source's; applied partpayment sums match).

Drills (``--drill``):
  kill     SIGKILL a random worker every --kill-every seconds during the workload; a new one replaces it
  handover the workload three times on fresh stacks with default timeouts: no kill, one SIGKILL mid-run,
           a SIGKILL every --kill-every s; the seconds from the last hook to target = source, and what the
           kills add (a live worker hands a dead one's jobs on after five silent beats)
  redis    SIGTERM Redis mid-run and start it again; then SIGKILL it (appendfsync always) and start it again
  faults   20 % 5xx, 5 % timeouts, 5 % HTML pages, 2 % lost answers on writes, a burst of 403s
  backlog  --backlog events queued before any worker runs: Redis memory per queued event; time to drain
  listener-down
           the listener stops for --down-seconds (Redis and workers keep running) while HostFact keeps firing:
           every hook the simulated HostFact fires goes through php-cli running deploy/hostfact/hooks.php
           (tests/php/fire.php), which spools what the listener cannot take; the listener comes back and
           deploy/hostfact/resend.php sends the spool (as HostFact's cron would), then once more from a copy.
           Verdict adds: every hook fired is exactly one event (by action+invoice, and every spooled
           webhook-id exactly once), the spool is empty, the second resend adds nothing.

    python bench/drills.py --drill kill --invoices 300
    python bench/drills.py --drill handover --invoices 300 --workers 3
    python bench/drills.py --drill listener-down --down-seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HOOK_SECRET, SOURCE_KEY, TARGET_KEY, WorkerPool, config_text, machine

LINES = [
    {"Description": "Hosting", "PriceExcl": "10", "TaxPercentage": "21"},
    {"Description": "Domain", "PriceExcl": "15", "TaxPercentage": "21"},
]


@dataclass
class Drill:
    workdir: Path
    redis_server: Any
    sim: Any
    source: Any
    target: Any
    traces: tuple[Any, Any]
    listener: Any
    store: Any
    redis: Any
    pool: WorkerPool
    api: Any
    settings: Any = None
    notes: list[str] = field(default_factory=list)

    async def redeliver(self) -> int:
        """What hooks.php's spool + resend.php do: post every hook that was not acknowledged again, with
        its own webhook-id (so one that did arrive is answered as a duplicate)."""
        import aiohttp
        from standardwebhooks import Webhook

        hook = Webhook(HOOK_SECRET)
        sent = 0
        async with aiohttp.ClientSession() as session:
            for delivery in self.source.hooks_fired:
                if delivery.delivered:
                    continue
                now = datetime.now(tz=UTC)
                headers = {
                    "content-type": "application/json",
                    "webhook-id": delivery.webhook_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": hook.sign(delivery.webhook_id, now, delivery.body),
                }
                for _ in range(50):
                    try:
                        async with session.post(
                            self.source.hooks.url, data=delivery.body.encode(), headers=headers
                        ) as r:
                            await r.read()
                            if 200 <= r.status < 300:
                                delivery.http_status = r.status
                                sent += 1
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)
        return sent

    async def settled(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                busy = await self.store.count("queued") + await self.store.count("running")
            except Exception:
                busy = 1
            if busy == 0:
                return True
            self.supervise()
            await asyncio.sleep(0.25)
        return False

    def supervise(self) -> None:
        """A process manager's job: replace a worker process that died."""
        for proc in list(self.pool.procs):
            if proc.poll() is not None and proc in self.pool.procs:
                self.pool.procs.remove(proc)
                if proc.returncode != -9:
                    self.notes.append(f"worker pid {proc.pid} exited by itself with code {proc.returncode}")
                self.pool.spawn()

    async def in_step(self, within: float) -> float | None:
        """Seconds until nothing is queued or running and the target mirrors the source (None: not within)."""
        from tests.ledgers import mirror_problems

        started = time.monotonic()
        while time.monotonic() - started < within:
            busy = await self.store.count("queued") + await self.store.count("running")
            if busy == 0 and not mirror_problems(self.source, self.target):
                return round(time.monotonic() - started, 2)
            self.supervise()
            await asyncio.sleep(0.1)
        return None

    async def verdict(self, within: float = 180) -> dict[str, Any]:
        await self.sim.drain_hooks()
        redelivered = await self.redeliver()
        result = await self.settle_and_check(within)
        acknowledged = [d for d in self.source.hooks_fired if d.delivered]
        stored_webhooks = set(result.pop("_webhook_ids"))
        result.pop("_events")
        lost = [d.webhook_id for d in acknowledged if d.webhook_id not in stored_webhooks]
        return {
            "hooks_fired": len(self.source.hooks_fired),
            "hooks_acknowledged": len(acknowledged),
            "redelivered_after_run": redelivered,
            **result,
            "acknowledged_but_lost": len(lost),
            "PASS": result["PASS"] and not lost,
        }

    async def settle_and_check(self, within: float = 180) -> dict[str, Any]:
        """Wait for the queue to empty, re-enqueue failed events once, then check the event store and the
        ledgers. "_webhook_ids" (the stored events' webhook-ids, a list) is for the caller to pop."""
        from tests.ledgers import mirror_problems, payment_history_problems

        ok = await self.settled(within)
        failed_first = await self.store.ids("failed", limit=100_000)
        reasons: dict[str, int] = {}
        for event_id in failed_first:
            event = await self.store.get(event_id)
            key = (event.reason if event else "?")[:120]
            reasons[key] = reasons.get(key, 0) + 1
        for event_id in failed_first:
            await self.store.requeue(event_id, by="drill")
        ok = await self.settled(within) and ok
        ids = await self.store.ids(limit=1_000_000)
        events = [await self.store.get(i) for i in ids]
        statuses: dict[str, int] = {}
        no_reason = 0
        for e in events:
            if e is None:
                continue
            statuses[e.status] = statuses.get(e.status, 0) + 1
            # An event ignored by the sync carries its reason in the route's outcome ("detail").
            outcome_reasons = [o.get("reason") or o.get("detail") for o in e.outcomes.values()]
            if e.status in ("failed", "ignored") and not (e.reason or any(outcome_reasons)):
                no_reason += 1
        mirror = mirror_problems(self.source, self.target)
        doubles = payment_history_problems(self.source, self.target, *self.traces)
        return {
            "_webhook_ids": [e.webhook_id for e in events if e],
            "_events": [e for e in events if e],
            "events": len(events),
            "statuses_after_requeue": statuses,
            "failed_before_requeue": len(failed_first),
            "failed_reasons": reasons,
            "settled": ok,
            "final_without_reason": no_reason,
            "mirror_problems": mirror[:10],
            "mirror_problem_count": len(mirror),
            "double_booking_problems": doubles[:10],
            "target_writes": self.target.count_calls(writes_only=True),
            "notes": self.notes,
            "PASS": ok
            and not no_reason
            and not mirror
            and not doubles
            and statuses.get("queued", 0) + statuses.get("running", 0) == 0,
        }


@contextlib.asynccontextmanager
async def drill(
    workdir: Path,
    *,
    workers: int = 2,
    appendfsync: str = "everysec",
    ban_pause: float = 5,
    hooks_url: str | None = None,
    group: Any = None,
    **config: Any,
) -> AsyncIterator[Drill]:
    """The stack; hooks_url sends the simulated HostFact's hooks elsewhere than the listener. The listener
    runs in this process as ``Drill.listener``; a drill may stop it and put a new one there. ``group``: a
    tests.redis_group.SentinelGroup (not started) to use instead of one embedded Redis."""
    from tasks.client import ApiClient
    from tasks.simulator import SimAdministration, run_simulator
    from tests.ledgers import trace_payments
    from worker import redisio
    from worker.config import Settings
    from worker.embedded_redis import EmbeddedRedis, free_port
    from worker.runtime import start
    from worker.store import EventStore
    from worker.web.app import create_app

    server = (
        group.start()
        if group is not None
        else EmbeddedRedis(workdir / "redis", appendfsync=appendfsync).start()
    )
    url = server.url
    port = free_port()
    source = SimAdministration(
        "hostfact",
        "hostfact",
        SOURCE_KEY,
        hooks_url=hooks_url or f"http://127.0.0.1:{port}/hooks/hostfact",
        hook_secret=HOOK_SECRET,
        seed=7,
    )
    target = SimAdministration("target", "wefact", TARGET_KEY, seed=11)
    traces = (trace_payments(source), trace_payments(target))
    try:
        async with run_simulator([source, target]) as sim:
            cfg = workdir / "drill.toml"
            cfg.write_text(
                config_text(
                    url, sim.api_url("hostfact"), sim.api_url("target"), ban_pause=ban_pause, **config
                )
            )
            from worker.config import load_settings

            settings: Settings = load_settings(cfg, listen_port=port)
            listener = await start(settings, url, app=create_app, work=False)
            # The drill's own reads ride out a restart or a failover as the workers do.
            redis = redisio.connect(url, retry_for=30)
            store = EventStore(redis, dedup_ttl=settings.dedup_ttl, job_expiry_ms=settings.job_expiry_ms)
            pool = WorkerPool(cfg, workdir / "workers.log")
            pool.start(workers)
            d: Drill | None = None
            try:
                async with ApiClient(settings.source("hostfact")) as api:
                    d = Drill(
                        workdir,
                        server,
                        sim,
                        source,
                        target,
                        traces,
                        listener,
                        store,
                        redis,
                        pool,
                        api,
                        settings,
                    )
                    yield d
            finally:
                pool.stop()
                if d is not None:
                    listener = d.listener
                    # A drill that restarted Redis holds the new server; that is the one to stop.
                    server = d.redis_server
                if listener is not None:
                    await listener.stop()
                await redis.aclose()
    finally:
        server.stop()


async def workload(d: Drill, invoices: int, users: int, seed: int = 1) -> int:
    """Make invoices in the simulated HostFact as users would; returns how many API calls failed."""
    from tasks.errors import ApiError

    rng = random.Random(seed)
    debtors = [
        (await d.api.call("debtor", "add", {"CompanyName": f"Drill {i}"}))["debtor"]["DebtorCode"]
        for i in range(max(1, min(20, invoices // 10)))
    ]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(invoices):
        queue.put_nowait(i)
    errors = 0

    async def call(controller: str, action: str, params: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal errors
        for _ in range(20):
            try:
                answer: dict[str, Any] = await d.api.call(controller, action, params)
                return answer
            except ApiError as exc:
                if "concurrent" in str(exc).lower():
                    await asyncio.sleep(0.05)
                    continue
                errors += 1
                return None
        errors += 1
        return None

    async def user() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            made = await call(
                "invoice",
                "add",
                {"DebtorCode": debtors[i % len(debtors)], "InvoiceLines": LINES, "Status": 2},
            )
            if not made:
                continue
            ident = made["invoice"]["Identifier"]
            for _ in range(rng.randint(1, 2)):
                await call(
                    "invoice", "partpayment", {"Identifier": ident, "AmountPaid": f"{rng.randint(1, 9)}.25"}
                )
            roll = rng.random()
            if roll < 0.5:
                await call("invoice", "markaspaid", {"Identifier": ident})
            elif roll < 0.6:
                await call("invoice", "credit", {"Identifier": ident})

    await asyncio.gather(*(user() for _ in range(users)))
    return errors


async def drill_kill(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    async with drill(workdir, workers=args.workers, job_timeout=10) as d:
        rng = random.Random(3)
        kills = 0
        work = asyncio.create_task(workload(d, args.invoices, args.users))
        started = time.monotonic()
        while not work.done() or time.monotonic() - started < args.kill_for:
            await asyncio.sleep(args.kill_every)
            alive = d.pool.alive()
            if alive:
                d.pool.kill(rng.choice(alive))
                kills += 1
            d.supervise()
            if work.done() and time.monotonic() - started > args.kill_for:
                break
        errors = await work
        result = await d.verdict(within=args.settle)
        return {"drill": "kill", "sigkills": kills, "workload_api_errors": errors, **result}


async def _registered(d: Drill, workers: int) -> None:
    """Wait until every worker process has beaten once (it takes no job before)."""
    from worker.heartbeat import heartbeats

    for _ in range(600):
        if len(await heartbeats(d.redis)) >= workers:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{workers} worker(s) did not start within a minute: see workers.log")


async def _busy_workers(d: Drill) -> list[Any]:
    """The worker processes running a job now: a kill of one lands in the middle of its work."""
    from worker import keys
    from worker.heartbeat import heartbeats

    busy = set()
    for beat in await heartbeats(d.redis):
        if await d.redis.scard(keys.worker_jobs(beat.worker_id)):
            busy.add(beat.pid)
    return [proc for proc in d.pool.alive() if proc.pid in busy]


async def drill_handover(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The same workload four times, each on a fresh stack with the default job timeout and lease: no kill;
    one worker SIGKILLed --kill-after s into the run; one SIGKILLed every --kill-every s while the workload
    runs; one SIGKILLed right after the last hook (at-end, the worst moment). Each victim is a worker
    running a job at that moment; a process manager restarts it at once.
    Measured: seconds from the last hook to target = source (the tail), and the tail a kill adds to the run
    without one (issue 13's goal: at most 20 s)."""
    runs: dict[str, dict[str, Any]] = {}
    for mode in args.modes.split(","):
        run_dir = workdir / mode
        run_dir.mkdir()
        extra = f"lease_seconds = 60\nheartbeat_seconds = {args.heartbeat}"
        # Retries that outlast a hand-over (a mirror waiting for a dead worker's document, say), as the
        # default policy does, without the default's minutes-long late backoffs inflating the tail.
        retry = {"max_tries": 12, "base_delay": 0.5, "max_delay": 4.0, "max_span": 300}
        async with drill(run_dir, workers=args.workers, job_timeout=120, retry=retry, extra=extra) as d:
            rng = random.Random(5)
            kills = 0
            await _registered(d, args.workers)
            begun = time.monotonic()
            work = asyncio.create_task(workload(d, args.invoices, args.users))
            if mode in ("at-end", "once"):
                # at-end, the worst moment: right after the last hook, a worker holding documents dies. once:
                # --kill-after s into the run, or as the queue drains when the workload was quicker.
                if mode == "at-end":
                    await work
                else:
                    await asyncio.wait([work], timeout=args.kill_after)
                for _ in range(500):
                    busy = await _busy_workers(d)
                    if busy:
                        d.pool.kill(rng.choice(busy))
                        kills += 1
                        d.supervise()
                        break
                    await asyncio.sleep(0.01)
            elif mode == "repeated":
                await asyncio.sleep(args.kill_after)
                while not work.done():
                    busy = await _busy_workers(d)
                    if busy:
                        d.pool.kill(rng.choice(busy))
                        kills += 1
                        d.supervise()
                        await asyncio.sleep(args.kill_every)
                    else:
                        await asyncio.sleep(0.05)
            errors = await work
            await d.sim.drain_hooks()
            workload_s = round(time.monotonic() - begun, 1)
            tail = await d.in_step(args.settle)
            result = await d.verdict(within=args.settle)
            log = (run_dir / "workers.log").read_text(errors="replace")
        runs[mode] = {
            "sigkills": kills,
            "workload_s": workload_s,
            "tail_s": tail,
            "handed_over": log.count('"worker.handed_over"'),
            "workload_api_errors": errors,
            "events": result["events"],
            "failed_before_requeue": result["failed_before_requeue"],
            "failed_reasons": result["failed_reasons"],
            "acknowledged_but_lost": result["acknowledged_but_lost"],
            "double_booking_problems": result["double_booking_problems"],
            "mirror_problem_count": result["mirror_problem_count"],
            "PASS": result["PASS"],
        }
    base = runs["none"]["tail_s"] if "none" in runs else None
    added: dict[str, float | None] = {}
    for mode in set(runs) - {"none"}:
        tail = runs[mode]["tail_s"]
        added[mode] = None if tail is None or base is None else round(tail - base, 2)
    return {
        "drill": "handover",
        "heartbeat_seconds": args.heartbeat,
        "runs": runs,
        "tail_added_by_kills_s": added,
        "goal_s": 20,
        "PASS": all(r["PASS"] for r in runs.values())
        and all(a is not None and a <= 20 for a in added.values()),
    }


async def drill_redis(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from worker.embedded_redis import EmbeddedRedis

    async with drill(workdir, workers=args.workers, appendfsync="always") as d:
        work = asyncio.create_task(workload(d, args.invoices, args.users))
        port, data = d.redis_server.port, d.redis_server.data_dir
        await asyncio.sleep(args.redis_after)
        stages = []
        for how in ("SIGTERM", "SIGKILL"):
            acked_before = sum(1 for h in d.source.hooks_fired if h.delivered)
            if how == "SIGTERM":
                d.redis_server.stop()
            else:
                d.redis_server.process.kill()
                d.redis_server.process.wait()
            down_at = time.monotonic()
            await asyncio.sleep(args.redis_down)
            d.redis_server = EmbeddedRedis(data, port=port, appendfsync="always").start()
            stages.append(
                {"how": how, "acked_before": acked_before, "down_s": round(time.monotonic() - down_at, 2)}
            )
            await asyncio.sleep(args.redis_after)
        errors = await work
        d.supervise()
        result = await d.verdict(within=args.settle)
        return {"drill": "redis", "restarts": stages, "workload_api_errors": errors, **result}


async def drill_faults(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    async with drill(
        workdir,
        workers=args.workers,
        job_timeout=15,
        retry={"max_tries": 12, "base_delay": 0.05, "max_delay": 0.5, "max_span": 120},
    ) as d:
        plan = d.target.faults
        plan.inject("http_500", probability=0.1)
        plan.inject("http_503", probability=0.1 / 0.9)
        plan.inject("timeout", probability=0.05 / 0.8, seconds=1.0)
        plan.inject("html", probability=0.05 / 0.76, status=500)
        plan.inject("lost_answer", probability=0.02 / 0.72, writes_only=True)
        work = asyncio.create_task(workload(d, args.invoices, args.users))
        await asyncio.sleep(2)
        plan.inject("ban_403", times=3, seconds=0)
        errors = await work
        await d.settled(args.settle)
        faults = {f"{r.kind}": r.hits for r in plan.rules}
        # As an operator would: mend the target, then re-enqueue what failed (the verdict does that). With
        # the faults still on, a re-enqueued event could fail again and leave its mirror behind.
        plan.clear()
        result = await d.verdict(within=args.settle)
        faulted = sum(1 for c in d.target.calls if c.fault)
        return {
            "drill": "faults",
            "faulted_target_calls": faulted,
            "fault_hits_by_rule": faults,
            "target_calls": len(d.target.calls),
            "workload_api_errors": errors,
            **result,
        }


async def drill_backlog(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from tasks.simulator.invoices import hook_ref

    async with drill(workdir, workers=0) as d:
        distinct = min(args.backlog, 2000)
        debtor = d.source.add_debtor(CompanyName="Backlog BV")
        invoices = [
            d.source.add_invoice(DebtorCode=debtor["DebtorCode"], InvoiceLines=LINES, Status=2)
            for _ in range(distinct)
        ]
        before = int((await d.redis.info("memory"))["used_memory"])
        started = time.perf_counter()
        for i in range(args.backlog):
            await d.store.accept(
                source="hostfact",
                action="invoice_is_created" if i < distinct else "invoice_is_edited",
                payload=hook_ref(invoices[i % distinct]),
                webhook_id=f"msg_backlog_{i}",
            )
        accept_s = time.perf_counter() - started
        after = int((await d.redis.info("memory"))["used_memory"])
        d.pool.start(args.workers)
        started = time.perf_counter()
        ok = await d.settled(args.settle)
        drain_s = time.perf_counter() - started
        result = await d.verdict(within=args.settle)
        return {
            "drill": "backlog",
            "queued_events": args.backlog,
            "distinct_invoices": distinct,
            "bytes_per_queued_event": round((after - before) / args.backlog),
            "used_memory_mb": round(after / 2**20, 1),
            "accept_s": round(accept_s, 1),
            "drain_s": round(drain_s, 1),
            "drained_events_per_s": round(args.backlog / drain_s, 1),
            "drained": ok,
            **result,
        }


# -- listener down: HostFact's PHP forwarder spools, resend.php delivers -----------------------------------

ROOT = Path(__file__).resolve().parent.parent
FIRE_PHP = ROOT / "tests" / "php" / "fire.php"
RESEND_PHP = ROOT / "deploy" / "hostfact" / "resend.php"
PHP_FLAGS = ("-d", "display_errors=stderr", "-d", "error_reporting=-1")
PHP_COMPLAINTS = ("Warning", "Notice", "Deprecated", "Fatal error", "Parse error")


@dataclass
class PhpHostFact:
    """HostFact's side of the wire: php-cli running deploy/hostfact/hooks.php (through tests/php/fire.php,
    which includes it the way HostFact does) and resend.php, configured through the environment."""

    url: str
    spool: Path
    fired: int = 0
    processes: int = 0
    spool_log_lines: int = 0
    complaints: list[str] = field(default_factory=list)
    bad_exits: list[tuple[str, int, str]] = field(default_factory=list)

    def env(self, spool: Path | None = None) -> dict[str, str]:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_")}
        return env | {
            "FACTSYNC_URL": self.url,
            "FACTSYNC_SECRET": HOOK_SECRET,
            "FACTSYNC_SPOOL_DIR": str(spool or self.spool),
        }

    async def php(self, *args: str, spool: Path | None = None) -> tuple[int, str, str]:
        import shutil

        php = shutil.which("php")
        if php is None:
            raise RuntimeError("php-cli is not installed (apt-get install -y php-cli php-curl)")
        proc = await asyncio.create_subprocess_exec(
            php,
            *PHP_FLAGS,
            *args,
            env=self.env(spool),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        self.processes += 1
        stdout, stderr = out.decode(), err.decode()
        self.complaints += [line for line in stderr.splitlines() if any(c in line for c in PHP_COMPLAINTS)]
        return proc.returncode or 0, stdout, stderr

    async def fire(self, hooks: list[tuple[str, dict[str, Any]]]) -> None:
        """Several hooks in one PHP process, as one HostFact request that fires them."""
        args = [arg for action, data in hooks for arg in (action, json.dumps(data))]
        code, stdout, stderr = await self.php(str(FIRE_PHP), *args)
        self.fired += len(hooks)
        self.spool_log_lines += stderr.count("spooled for resend.php")
        if code != 0 or stdout:
            self.bad_exits.append(("fire", code, (stdout + stderr)[:300]))

    async def resend(self, spool: Path | None = None) -> dict[str, Any]:
        import re

        started = time.monotonic()
        code, stdout, stderr = await self.php(str(RESEND_PHP), spool=spool)
        found = re.search(r"sent (\d+), kept (\d+), dropped (\d+)", stdout + stderr)
        sent, kept, dropped = (int(x) for x in found.groups()) if found else (0, 0, 0)
        if not found:
            self.bad_exits.append(("resend", code, (stdout + stderr)[:300]))
        return {
            "exit": code,
            "sent": sent,
            "kept": kept,
            "dropped": dropped,
            "seconds": round(time.monotonic() - started, 2),
        }

    def spooled_ids(self, spool: Path | None = None) -> list[str]:
        folder = spool or self.spool
        if not folder.exists():
            return []
        return [p.name.split("-", 1)[1].removesuffix(".json") for p in sorted(folder.glob("*.json"))]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def paced_workload(d: Drill, stop: asyncio.Event, per_second: float, seed: int = 1) -> dict[str, int]:
    """HostFact users at a steady pace: an invoice every 1/per_second s (made, 1-2 part payments, half
    marked paid, a tenth credited), until ``stop``; waits for the invoices under way."""
    from tasks.errors import ApiError

    rng = random.Random(seed)
    counts = {"invoices": 0, "api_errors": 0}
    debtors = [
        (await d.api.call("debtor", "add", {"CompanyName": f"Down {i}"}))["debtor"]["DebtorCode"]
        for i in range(5)
    ]

    async def call(controller: str, action: str, params: dict[str, Any]) -> dict[str, Any] | None:
        for _ in range(40):
            try:
                answer: dict[str, Any] = await d.api.call(controller, action, params)
                return answer
            except ApiError as exc:
                if "concurrent" in str(exc).lower():
                    await asyncio.sleep(0.05)
                    continue
                break
        counts["api_errors"] += 1
        return None

    async def one(i: int, parts: int, roll: float) -> None:
        made = await call(
            "invoice", "add", {"DebtorCode": debtors[i % len(debtors)], "InvoiceLines": LINES, "Status": 2}
        )
        if not made:
            return
        counts["invoices"] += 1
        ident = made["invoice"]["Identifier"]
        for _ in range(parts):
            await asyncio.sleep(0.1)
            await call(
                "invoice", "partpayment", {"Identifier": ident, "AmountPaid": f"{rng.randint(1, 9)}.25"}
            )
        if roll < 0.5:
            await call("invoice", "markaspaid", {"Identifier": ident})
        elif roll < 0.6:
            await call("invoice", "credit", {"Identifier": ident})

    tasks = []
    i = 0
    while not stop.is_set():
        tasks.append(asyncio.create_task(one(i, rng.randint(1, 2), rng.random())))
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1 / per_second)
    await asyncio.gather(*tasks)
    return counts


async def drill_listener_down(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The listener stops (Redis and workers keep running) while HostFact keeps firing hooks through php-cli
    running hooks.php: they go to the spool; the listener comes back; resend.php (as cron) sends them."""
    import shutil
    from collections import Counter

    from worker.runtime import start
    from worker.web.app import create_app

    # The simulated HostFact's own deliveries go nowhere (a closed port): its hook log is only where this
    # drill reads each hook's action and params from, to fire them through hooks.php.
    async with drill(
        workdir, workers=args.workers, hooks_url=f"http://127.0.0.1:{_closed_port()}/hooks/hostfact"
    ) as d:
        php = PhpHostFact(f"http://127.0.0.1:{d.settings.listen_port}/hooks/hostfact", workdir / "spool")
        stop_work, stop_pump = asyncio.Event(), asyncio.Event()
        phase = {"name": "up"}
        fired_by_phase: Counter[str] = Counter()

        async def pump() -> None:
            """Every hook the simulated HostFact fires, through hooks.php, in order, a few per PHP process."""
            n = 0
            while True:
                batch = d.source.hooks_fired[n : n + args.hooks_per_request]
                if batch:
                    n += len(batch)
                    fired_by_phase[phase["name"]] += len(batch)
                    await php.fire([(h.action, json.loads(h.body)["data"]) for h in batch])
                elif stop_pump.is_set():
                    return
                else:
                    await asyncio.sleep(0.02)

        pumping = asyncio.create_task(pump())
        work = asyncio.create_task(paced_workload(d, stop_work, args.invoice_rate))
        await asyncio.sleep(args.up_seconds)

        phase["name"] = "down"
        await d.listener.stop()
        d.listener = None
        down_at = time.monotonic()
        await asyncio.sleep(args.down_seconds)
        spooled_while_down = len(php.spooled_ids())

        d.listener = await start(d.settings, d.redis_server.url, app=create_app, work=False)
        up_at = time.monotonic()
        phase["name"] = "up again"
        # The next cron tick comes while HostFact goes on firing (hooks.php now delivers them itself).
        await asyncio.sleep(min(1.0, args.up_seconds))
        again = workdir / "spool-copy"
        shutil.copytree(php.spool, again)
        spooled_ids = php.spooled_ids()
        resends = [await php.resend()]
        await asyncio.sleep(args.up_seconds)
        stop_work.set()
        counts = await work
        stop_pump.set()
        await pumping
        # More cron ticks until the spool is empty (a hook spooled late, or a run that stopped at a failure).
        for _ in range(10):
            if not php.spooled_ids():
                break
            spooled_ids += [i for i in php.spooled_ids() if i not in spooled_ids]
            resends.append(await php.resend())
            await asyncio.sleep(0.5)
        resend_done = time.monotonic()
        events_before_copy = await d.store.count()
        # A resend of what was spooled, once more (a second copy of the spool, or a run that sent a file and
        # died before deleting it): every webhook-id is known to the listener; nothing may double.
        duplicate_resend = await php.resend(spool=again)
        events_after_copy = await d.store.count()

        drained = await d.settled(args.settle)
        drain_s = time.monotonic() - up_at
        result = await d.settle_and_check(args.settle)
        events = result.pop("_events")
        webhook_ids = result.pop("_webhook_ids")

        fired = d.source.hooks_fired
        fired_keys = Counter((h.action, str(json.loads(h.body)["data"].get("id"))) for h in fired)
        event_keys = Counter((e.action, str(e.payload.get("id"))) for e in events)
        id_counts = Counter(webhook_ids)
        spooled_not_once = [i for i in spooled_ids if id_counts[i] != 1]
        lost = fired_keys - event_keys
        doubled = event_keys - fired_keys
        hooks = {
            "hooks_fired_through_hooks_php": php.fired,
            "hooks_fired_by_phase": dict(fired_by_phase),
            "php_processes": php.processes,
            "spooled_while_down": spooled_while_down,
            "spooled_total": len(spooled_ids),
            "spool_log_lines": php.spool_log_lines,
            "resend_runs": resends,
            "resent": sum(r["sent"] for r in resends),
            "duplicate_resend_of_spool_copy": duplicate_resend,
            "events_before_after_duplicate_resend": [events_before_copy, events_after_copy],
            "spool_left": len(php.spooled_ids()),
            "events_lost_vs_hooks": sum(lost.values()),
            "events_doubled_vs_hooks": sum(doubled.values()),
            "duplicate_webhook_ids": sum(c - 1 for c in id_counts.values() if c > 1),
            "spooled_ids_not_exactly_once": len(spooled_not_once),
            "php_complaints": php.complaints[:5],
            "php_bad_exits": php.bad_exits[:5],
            "listener_down_s": round(up_at - down_at, 1),
            "resend_done_after_restart_s": round(resend_done - up_at, 1),
            "drained_after_restart_s": round(drain_s, 1),
            "drained": drained,
        }
        ok = (
            result["PASS"]
            and drained
            and php.fired == len(fired) == result["events"]
            and not lost
            and not doubled
            and not spooled_not_once
            and hooks["duplicate_webhook_ids"] == 0
            and spooled_while_down > 0
            and hooks["spool_left"] == 0
            and events_after_copy == events_before_copy
            and duplicate_resend["sent"] == len(spooled_ids)
            and not php.complaints
            and not php.bad_exits
        )
        return {
            "drill": "listener-down",
            "invoices": counts["invoices"],
            "workload_api_errors": counts["api_errors"],
            **hooks,
            **result,
            "PASS": ok,
        }


# -- Redis failover: a Sentinel group loses its primary mid-run ---------------------------------------------


async def drill_failover(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """A primary, a replica and three sentinels on 127.0.0.1 (tests/redis_group.py); hooks at a steady
    pace; the primary SIGKILLed mid-run, the sentinels promote the replica; the old primary comes back
    --back-after seconds later (the sentinels make it a replica). The listener's answers all along, its
    readiness (/readyz every 50 ms), worker processes that exited, and the books at the end."""
    from collections import Counter

    import aiohttp

    from tests.redis_group import SentinelGroup

    group = SentinelGroup(workdir / "redis", down_after_ms=args.down_after_ms, appendfsync="everysec")
    wait = f"redis_wait_replicas = {args.wait_replicas}\nredis_wait_timeout = {args.wait_timeout}"
    async with drill(workdir, workers=args.workers, group=group, extra=wait) as d:
        ready: list[tuple[float, int]] = []
        stop_probe, stop_work = asyncio.Event(), asyncio.Event()

        async def probe() -> None:
            url = f"http://127.0.0.1:{d.settings.listen_port}/readyz"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
                while not stop_probe.is_set():
                    try:
                        async with session.get(url) as r:
                            ready.append((time.monotonic(), r.status))
                    except (aiohttp.ClientError, TimeoutError):
                        ready.append((time.monotonic(), 0))
                    await asyncio.sleep(0.05)

        probing = asyncio.create_task(probe())
        work = asyncio.create_task(paced_workload(d, stop_work, args.invoice_rate))
        await asyncio.sleep(args.up_seconds)
        fired_before = len(d.source.hooks_fired)
        old = group.kill_primary()
        killed_at = time.monotonic()
        switch_s = await group.failed_over(old, within=60)
        await asyncio.sleep(max(0.0, args.back_after - (time.monotonic() - killed_at)))
        group.restart(old)
        back_at = time.monotonic()
        await asyncio.sleep(args.up_seconds)
        stop_work.set()
        counts = await work
        await d.sim.drain_hooks()
        fired_during = len(d.source.hooks_fired) - fired_before
        stop_probe.set()
        await probing

        answers = Counter(str(h.http_status or h.error or "none").split(":")[0] for h in d.source.hooks_fired)
        not_ready = [t for t, status in ready if t >= killed_at and status != 200]
        ready_again = next(
            (t for t, status in ready if t > (not_ready[-1] if not_ready else killed_at)), None
        )
        exited = [n for n in d.notes if "exited by itself" in n]
        result = await d.verdict(within=args.settle)
        events = [await d.store.get(i) for i in await d.store.ids(limit=1_000_000)]
        fired_keys = Counter((h.action, str(h.data.get("id"))) for h in d.source.hooks_fired)
        event_keys = Counter((e.action, str(e.payload.get("id"))) for e in events if e)
        ids = Counter(e.webhook_id for e in events if e)
        figures = {
            "hooks_fired": len(d.source.hooks_fired),
            "hooks_fired_after_the_kill": fired_during,
            "listener_answers": dict(answers),
            "answers_5xx_other_than_503": sum(
                n
                for status, n in answers.items()
                if status.isdigit() and int(status) >= 500 and status != "503"
            ),
            "sentinels_switched_after_s": round(switch_s, 2),
            "listener_not_ready_s": round((ready_again or killed_at) - killed_at, 2),
            "readyz_answers_after_kill": dict(Counter(s for t, s in ready if t >= killed_at)),
            "old_primary_back_after_s": round(back_at - killed_at, 2),
            "worker_processes_exited": len(exited),
            "events_lost_vs_hooks": sum((fired_keys - event_keys).values()),
            "events_doubled_vs_hooks": sum((event_keys - fired_keys).values()),
            "duplicate_webhook_ids": sum(c - 1 for c in ids.values() if c > 1),
        }
        ok = (
            result["PASS"]
            and figures["answers_5xx_other_than_503"] == 0
            and not exited
            and figures["events_lost_vs_hooks"] == 0
            and figures["events_doubled_vs_hooks"] == 0
            and figures["duplicate_webhook_ids"] == 0
        )
        return {
            "drill": "failover",
            "wait_replicas": args.wait_replicas,
            "invoices": counts["invoices"],
            "workload_api_errors": counts["api_errors"],
            **figures,
            **result,
            "PASS": ok,
        }


DRILLS = {
    "kill": drill_kill,
    "handover": drill_handover,
    "redis": drill_redis,
    "faults": drill_faults,
    "backlog": drill_backlog,
    "listener-down": drill_listener_down,
    "failover": drill_failover,
}


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    names = list(DRILLS) if args.drill == "all" else args.drill.split(",")
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            result = await DRILLS[name](args, Path(tmp))
            result["seconds"] = round(time.monotonic() - started, 1)
            print(json.dumps(result, indent=2, default=str), flush=True)
            results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--drill",
        default="all",
        help="kill, handover, redis, faults, backlog, listener-down, failover, comma-separated, or all",
    )
    parser.add_argument(
        "--invoices", type=int, default=300, help="invoices in the workload (~3.5 events each)"
    )
    parser.add_argument("--users", type=int, default=8, help="concurrent users acting on HostFact")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--kill-for", type=float, default=20.0, help="keep killing at least this long")
    parser.add_argument(
        "--kill-after", type=float, default=3.0, help="handover: seconds into the run of the (first) kill"
    )
    parser.add_argument("--heartbeat", type=float, default=2.0, help="handover: heartbeat_seconds")
    parser.add_argument(
        "--modes",
        default="none,once,repeated,at-end",
        help="handover: which runs (at-end: a kill right after the last hook)",
    )
    parser.add_argument(
        "--redis-after", type=float, default=4.0, help="seconds of work before/after each stop"
    )
    parser.add_argument("--redis-down", type=float, default=1.0, help="seconds Redis stays down")
    parser.add_argument("--backlog", type=int, default=20_000, help="queued events for the backlog drill")
    parser.add_argument(
        "--down-seconds", type=float, default=20.0, help="listener-down: seconds the listener stays down"
    )
    parser.add_argument(
        "--up-seconds", type=float, default=3.0, help="listener-down: seconds of firing before and after"
    )
    parser.add_argument(
        "--invoice-rate", type=float, default=2.0, help="listener-down: invoices made per second (~3.5 hooks)"
    )
    parser.add_argument(
        "--hooks-per-request", type=int, default=4, help="listener-down: hooks per php-cli process at most"
    )
    parser.add_argument(
        "--down-after-ms",
        type=int,
        default=1000,
        help="failover: the sentinels' down-after-milliseconds (Redis's default is 30000)",
    )
    parser.add_argument(
        "--back-after", type=float, default=10.0, help="failover: seconds until the old primary comes back"
    )
    parser.add_argument(
        "--wait-replicas", type=int, default=1, help="failover: redis_wait_replicas (0: answer without WAIT)"
    )
    parser.add_argument("--wait-timeout", type=float, default=0.5, help="failover: redis_wait_timeout")
    parser.add_argument("--settle", type=float, default=240.0, help="seconds allowed to settle")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = asyncio.run(amain(args))
    summary = {"machine": machine(), "args": vars(args) | {"json": str(args.json)}, "results": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0 if all(r.get("PASS") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
