"""A worker process SIGKILLed in the middle of payment syncs: a fresh worker finishes them, and every payment
is booked in the target exactly once.

Invariants pinned (shared/design.md): 3 nothing accepted is lost (a killed worker's job runs again) and 2 no
double booking (the amount of a partpayment is read from the target under the document's lock, so a payment
that the dead worker managed to book is not booked again, and one it did not is booked once).

One kill covers the three moments a kill can land on a target write, each on its own invoice:

- A, before the write: the target's ``partpayment`` hangs (the simulator's ``timeout`` fault) and is never
  applied. The new worker must book it.
- B, a write that lands after the worker died: the ``partpayment`` sits in the simulator's ``latency`` fault
  (which delays BEFORE applying) when the worker is killed, and is applied 3 s later with nobody listening.
  The new worker must see it booked and book nothing.
- C, after the write, before the answer: a relay in front of the target forwards the ``partpayment`` (it is
  applied) and holds its answer, so the worker is killed while it waits for it, before it can record
  anything. The new worker must see it booked and book nothing.

How long it takes: the killed worker stops beating; once it has been silent for five beats (heartbeat_seconds
is 1 s here), the new worker hands its jobs on (worker.handover): it frees their arq in-progress keys and the
document leases the dead worker held, so the jobs run again at once. Without the hand-over they would wait
for arq's in-progress key (the longest function timeout + 10 s: 70 s here) and the leases (60 s): the test
allows `TAKEOVER_WITHIN`, well under both.

A second, quick test pins what happens when a lease is NOT gone yet: a sync that finds its document held
stands down, trusting the holder to run it once more; a dead holder never will, so the document must be
synced once its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from tasks.client import ApiClient
from tasks.simulator import SimAdministration, run_simulator
from tests.conftest import HOOK_SECRET, SOURCE_KEY, TARGET_KEY
from tests.ledgers import (
    applied_payment_calls,
    booked_payments,
    invoice_of_call,
    mirror_problems,
    mirrors_of,
    payment_history_problems,
    trace_payments,
)
from tests.stack import LINES, hostfact_firing_at, pipeline_settings
from worker import keys
from worker.embedded_redis import free_port
from worker.redisio import done
from worker.runtime import start
from worker.store import FINAL, Event, EventStore
from worker.web.app import create_app

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 60
# arq's in-progress key of a killed worker's job lives max(fan_out's 30 s, job_timeout) + 10 s.
IN_PROGRESS = max(30, JOB_TIMEOUT) + 10
# The dead worker's document leases, as long as by default: the hand-over must free them.
LEASE_SECONDS = 60
HEARTBEAT_SECONDS = 1
# Five silent beats, the next beat of the new worker, its start-up, and the syncs themselves.
TAKEOVER_WITHIN = 30
assert TAKEOVER_WITHIN < min(IN_PROGRESS, LEASE_SECONDS)
PAYMENTS = {"A": Decimal("10.00"), "B": Decimal("20.00"), "C": Decimal("30.00")}


def config_file(path: Path, redis_url: str, hostfact_url: str, wefact_url: str) -> Path:
    path.write_text(
        f"""
redis_url = "{redis_url}"
shutdown_grace = 1
poll_delay = 0.01
job_timeout = {JOB_TIMEOUT}
lease_seconds = {LEASE_SECONDS}
heartbeat_seconds = {HEARTBEAT_SECONDS}

[retry]
max_tries = 6
base_delay = 0.05
max_delay = 0.2

[sources.hostfact]
api_url = "{hostfact_url}"
api_key = "{SOURCE_KEY}"
hook_secrets = ["{HOOK_SECRET}"]
rate_limit_per_minute = 600000

[targets.wefact]
dialect = "wefact"
api_url = "{wefact_url}"
api_key = "{TARGET_KEY}"
rate_limit_per_minute = 600000

[routes.sales]
source = "hostfact"
target = "wefact"
"""
    )
    return path


@dataclass
class HoldingRelay:
    """Stands in front of the target's API. Forwards every call; for the ``invoice partpayment`` of the
    invoice numbered `hold_code` it forwards the call (the target applies it), then holds the answer."""

    upstream: str
    target: SimAdministration
    hold_code: str | None = None
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        assert self.session is not None
        try:
            async with self.session.post(
                self.upstream, data=body, headers={"Content-Type": request.content_type}
            ) as upstream:
                answer, status = await upstream.read(), upstream.status
                content_type = upstream.content_type
        except aiohttp.ClientError:
            # The target dropped the line unanswered: so does the relay.
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=204)
        if self._is_held(params):
            self.held.set()
            await self.release.wait()
        return web.Response(body=answer, status=status, content_type=content_type)

    def _is_held(self, params: dict[str, str]) -> bool:
        if self.hold_code is None or (params.get("controller"), params.get("action")) != (
            "invoice",
            "partpayment",
        ):
            return False
        invoice = invoice_of_call(self.target, params)
        return invoice is not None and self.target.invoice(invoice)["InvoiceCode"] == self.hold_code


async def _until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(0.02)


async def _spawn_worker(config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_")}
    with log.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker.cli",
            "-c",
            str(config),
            "--log-text",
            "worker",
            env=env,
            stdout=sink,
            stderr=sink,
            # Its own process group, so a kill reaches any process it starts too.
            start_new_session=True,
        )


def _kill(worker: asyncio.subprocess.Process) -> None:
    """SIGKILL the worker and anything it started (its process group, which `_spawn_worker` created)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def relay_in_front_of(
    upstream: str, target: SimAdministration
) -> AsyncIterator[tuple[HoldingRelay, str]]:
    """A `HoldingRelay` on a free port; yields it and the API URL the workers use instead of the target's."""
    async with aiohttp.ClientSession() as session:
        relay = HoldingRelay(upstream, target, session=session)
        app = web.Application()
        app.router.add_post("/wefact/api/v2/", relay.handle)
        # Held and hanging requests belong to a killed worker: do not wait long for them on the way out.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            yield relay, f"http://{host}:{port}/wefact/api/v2/"
        finally:
            relay.release.set()
            await runner.cleanup()


@contextlib.asynccontextmanager
async def worker_processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Collects the worker processes a test starts; kills what is left of them on the way out."""
    workers: list[asyncio.subprocess.Process] = []
    try:
        yield workers
    finally:
        for worker in workers:
            _kill(worker)
            await worker.wait()


@pytest.mark.timeout(TAKEOVER_WITHIN + 60)
async def test_a_worker_killed_mid_payment_leaves_every_payment_booked_once(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL a worker while three payment syncs are at the three moments of a target write (before it,
    applied later without the worker, applied but unanswered); a fresh worker takes the jobs over. Each
    event ends done, each mirror is paid exactly what the source is paid, by exactly one applied
    ``partpayment``."""
    port = free_port()
    hostfact = hostfact_firing_at(port)
    wefact = SimAdministration("wefact", "wefact", TARGET_KEY)
    source_trace, target_trace = trace_payments(hostfact), trace_payments(wefact)
    log = tmp_path / "workers.log"
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(run_simulator([hostfact, wefact]))
        relay, target_url = await stack.enter_async_context(relay_in_front_of(sim.api_url("wefact"), wefact))
        settings = pipeline_settings(redis_url, sim.api_url("hostfact"), target_url, port)
        store = EventStore.for_settings(redis, settings)
        config = config_file(tmp_path / "factsync.toml", redis_url, sim.api_url("hostfact"), target_url)
        listener = await start(settings, redis_url, app=create_app, work=False)
        stack.push_async_callback(listener.stop)
        workers = await stack.enter_async_context(worker_processes())
        source = await stack.enter_async_context(ApiClient(settings.source("hostfact")))

        workers.append(await _spawn_worker(config, log))
        # Three invoices, mirrored before anything is paid.
        debtor = (await source.call("debtor", "add", {"CompanyName": "Company X"}))["debtor"]
        ident: dict[str, int] = {}
        code: dict[str, str] = {}
        for case in PAYMENTS:
            params = {"DebtorCode": debtor["DebtorCode"], "InvoiceLines": LINES, "Status": 2}
            invoice = (await source.call("invoice", "add", params))["invoice"]
            ident[case], code[case] = int(invoice["Identifier"]), str(invoice["InvoiceCode"])
        created = await _settled(store, 3, within=20, log=log)
        assert all(e.status == "done" for e in created), [(e.action, e.status, e.reason) for e in created]
        problems = mirror_problems(hostfact, wefact)
        assert not problems, f"the invoices were not mirrored: {problems}"

        def mirror_id(case: str) -> int:
            (mirror,) = mirrors_of(wefact, "hostfact", ident[case])
            return int(mirror["Identifier"])

        def payment_calls(case: str) -> list[Any]:
            return [
                call
                for call in wefact.calls
                if (call.controller, call.action) == ("invoice", "partpayment")
                and invoice_of_call(wefact, call.params) == mirror_id(case)
            ]

        async def pay(case: str) -> None:
            params = {"Identifier": ident[case], "AmountPaid": str(PAYMENTS[case])}
            await source.call("invoice", "partpayment", params)

        # C: applied, answer held by the relay.
        relay.hold_code = code["C"]
        await pay("C")
        await _wait(relay.held.wait(), 15, "C: the target's partpayment for C was applied", log)
        # A: hangs in the target (10 s, then dropped unanswered), never applied.
        wefact.faults.inject("timeout", controller="invoice", action="partpayment", seconds=10, times=1)
        await pay("A")
        await _until(lambda: bool(payment_calls("A")), 15, "A: the partpayment for A reached the target")
        # B: delayed 3 s in the target, then applied, whoever is still listening.
        wefact.faults.inject("latency", controller="invoice", action="partpayment", seconds=3, times=1)
        await pay("B")
        await _until(lambda: bool(payment_calls("B")), 15, "B: the partpayment for B reached the target")

        _kill(workers[0])
        await workers[0].wait()
        relay.hold_code = None  # the new worker's calls are answered
        killed_at = time.monotonic()
        # The kill landed where each case says it does.
        assert [c.fault for c in payment_calls("A")] == ["timeout"] and not payment_calls("A")[0].applied
        assert [c.fault for c in payment_calls("B")] == ["latency"] and not payment_calls("B")[0].applied
        assert [c.applied for c in payment_calls("C")] == [True]

        workers.append(await _spawn_worker(config, log))
        events = await _settled(store, 6, within=TAKEOVER_WITHIN, log=log, redis=redis)
        took_over = time.monotonic() - killed_at

        problems = [
            f"event {e.action} {e.payload.get('InvoiceCode')} is {e.status}: {e.reason}"
            for e in events
            if e.status != "done"
        ]
        booked = booked_payments(wefact)
        for case, amount in PAYMENTS.items():
            applied = applied_payment_calls(wefact, mirror_id(case))
            if len(applied) != 1 or booked.get(mirror_id(case)) != amount:
                problems.append(
                    f"{case} ({code[case]}): expected exactly one applied partpayment of {amount} in the "
                    f"target, found {[(c.params.get('AmountPaid'), c.fault) for c in applied]}"
                )
        problems += mirror_problems(hostfact, wefact)
        problems += payment_history_problems(hostfact, wefact, source_trace, target_trace)
        assert not problems, (
            f"after the kill (the new worker took over within {took_over:.1f} s):\n- "
            + "\n- ".join(problems)
            + f"\n\nworker log (tail):\n{_tail(log)}"
        )


async def _wait(awaitable: Any, within: float, what: str, log: Path) -> None:
    try:
        await asyncio.wait_for(awaitable, within)
    except TimeoutError:
        raise AssertionError(
            f"{what}: not within {within:.0f} s\n\nworker log (tail):\n{_tail(log)}"
        ) from None


async def _settled(
    store: EventStore, count: int, *, within: float, log: Path | None = None, redis: Redis | None = None
) -> list[Event]:
    """Wait for ``count`` events, all settled; on time-out, say which are stuck and what holds them."""
    deadline = time.monotonic() + within
    while True:
        events = [e for e in [await store.get(i) for i in await store.ids(limit=1000)] if e]
        if len(events) >= count and all(e.status in FINAL for e in events):
            return events
        if time.monotonic() > deadline:
            stuck = [e for e in events if e.status not in FINAL]
            details = []
            for event in stuck:
                document = str(event.payload.get("id"))
                line = (
                    f"{event.action} {event.payload.get('InvoiceCode')} (document {document}) {event.status}"
                )
                if redis is not None:
                    lease = await redis.pttl(keys.lock("sales", document))
                    pending = await done(redis.scard(keys.pending("sales", document)))
                    held = f"held for {lease} ms more" if lease >= 0 else "gone (expired or released)"
                    line += f"; lease {keys.lock('sales', document)} {held}; {pending} event(s) pending"
                details.append(line)
            hint = ""
            if redis is not None and stuck:
                hint = (
                    "\nA sync that finds its document's lease held stands down and relies on the holder's "
                    "release to run the document once more. A holder that died (a killed worker) never "
                    "releases: once its lease expires, nothing schedules the document again. A killed "
                    "worker's own job runs again when arq's in-progress key expires (the longest function "
                    "timeout + 10 s), and stands down too if the dead lease (lease_seconds) outlives that."
                )
            raise AssertionError(
                f"{len(events)}/{count} events, {len(stuck)} not settled within {within:.0f} s:\n  "
                + "\n  ".join(details)
                + hint
                + (f"\n\nworker log (tail):\n{_tail(log)}" if log else "")
            )
        await asyncio.sleep(0.05)


def _tail(log: Path, lines: int = 25) -> str:
    if not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def test_a_document_held_by_a_dead_worker_is_synced_once_its_lease_expires(
    redis: Redis, redis_url: str
) -> None:
    """Invariant 3, nothing accepted is lost: a sync that finds its document's lease held by a worker that
    has died (no release will ever queue its follow-up) must still run once the lease expires, and the
    payment is booked once. Here the dead worker is a lease set straight in Redis, 2 s long."""
    port = free_port()
    hostfact = hostfact_firing_at(port)
    wefact = SimAdministration("wefact", "wefact", TARGET_KEY)
    async with run_simulator([hostfact, wefact]) as sim:
        settings = pipeline_settings(redis_url, sim.api_url("hostfact"), sim.api_url("wefact"), port)
        store = EventStore.for_settings(redis, settings)
        running = await start(settings, redis_url, app=create_app)
        try:
            async with ApiClient(settings.source("hostfact")) as source:
                debtor = (await source.call("debtor", "add", {"CompanyName": "Company X"}))["debtor"]
                params = {"DebtorCode": debtor["DebtorCode"], "InvoiceLines": LINES, "Status": 2}
                invoice = (await source.call("invoice", "add", params))["invoice"]
                (created,) = await _settled(store, 1, within=15)
                assert created.status == "done", created

                document = str(invoice["Identifier"])
                await redis.set(keys.lock("sales", document), "token-of-a-dead-worker", px=2000)
                await source.call(
                    "invoice", "partpayment", {"Identifier": invoice["Identifier"], "AmountPaid": "10.00"}
                )
                events = await _settled(store, 2, within=10, redis=redis)
        finally:
            await running.stop()
    paid = next(e for e in events if e.action == "invoice_is_partly_paid")
    assert paid.status == "done", paid
    (mirror,) = mirrors_of(wefact, "hostfact", int(invoice["Identifier"]))
    assert [c.params.get("AmountPaid") for c in applied_payment_calls(wefact, mirror["Identifier"])] == [
        "10.00"
    ]
