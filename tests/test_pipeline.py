"""The pipeline end to end: simulated HostFact fires signed hooks → listener → Redis → arq worker → API.

Everything is real and on sockets: the embedded Redis, the simulator, the listener and an arq worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tasks.client import ApiClient
from tasks.simulator import SimAdministration, run_simulator
from tests.conftest import SOURCE_KEY, TARGET_KEY, hook_body, sign
from tests.stack import LINES, hostfact_firing_at, pipeline_settings
from worker.config import Settings
from worker.embedded_redis import free_port
from worker.runtime import Running, start
from worker.store import FINAL, Event, EventStore
from worker.web.app import create_app


@dataclass
class Pipeline:
    settings: Settings
    store: EventStore
    hostfact: SimAdministration
    wefact: SimAdministration
    source: ApiClient
    running: Running

    async def settled(self, event_id: str, within: float = 15) -> Event:
        deadline = time.monotonic() + within
        while True:
            event = await self.store.get(event_id)
            if event is not None and event.status in FINAL:
                return event
            if time.monotonic() > deadline:
                raise AssertionError(f"event {event_id} did not settle: {event}")
            await asyncio.sleep(0.02)

    async def all_settled(self, within: float = 15) -> list[Event]:
        deadline = time.monotonic() + within
        while True:
            events = [e for e in [await self.store.get(i) for i in await self.store.ids(limit=1000)] if e]
            if events and all(e.status in FINAL for e in events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"events did not settle: {[(e.action, e.status) for e in events]}")
            await asyncio.sleep(0.02)

    async def new_invoice(self) -> dict[str, Any]:
        debtor = (await self.source.call("debtor", "add", {"CompanyName": "Company X"}))["debtor"]
        params = {"DebtorCode": debtor["DebtorCode"], "InvoiceLines": LINES, "Status": 2}
        invoice: dict[str, Any] = (await self.source.call("invoice", "add", params))["invoice"]
        return invoice


@pytest.fixture
async def pipeline(redis: Redis, redis_url: str) -> AsyncIterator[Pipeline]:
    port = free_port()
    hostfact = hostfact_firing_at(port)
    wefact = SimAdministration("wefact", "wefact", TARGET_KEY)
    async with run_simulator([hostfact, wefact]) as sim:
        settings = pipeline_settings(redis_url, sim.api_url("hostfact"), sim.api_url("wefact"), port)
        running = await start(settings, redis_url, app=create_app)
        store = EventStore.for_settings(redis, settings)
        async with ApiClient(settings.source("hostfact")) as source:
            try:
                yield Pipeline(settings, store, hostfact, wefact, source, running)
            finally:
                await running.stop()


def source_reads(admin: SimAdministration) -> list[Any]:
    return [call for call in admin.calls if (call.controller, call.action) == ("invoice", "show")]


async def test_a_hook_fired_by_hostfact_reaches_a_worker_that_reads_the_invoice(pipeline: Pipeline) -> None:
    invoice = await pipeline.new_invoice()
    await pipeline.source.call(
        "invoice", "partpayment", {"Identifier": invoice["Identifier"], "AmountPaid": "5.25"}
    )

    events = await pipeline.all_settled()

    assert sorted(e.action for e in events) == ["invoice_is_created", "invoice_is_partly_paid"]
    for event in events:
        assert event.status == "done", event
        outcome = event.outcomes["sales"]
        assert outcome["status"] == "done"
        assert invoice["InvoiceCode"] in outcome["detail"]
    paid = next(e for e in events if e.action == "invoice_is_partly_paid")
    assert paid.payload["AmountPaidNow"] == "5.25"
    assert source_reads(pipeline.hostfact), "the worker must read the invoice from the HostFact API"
    mirror = pipeline.wefact.invoice_by_code(invoice["InvoiceCode"])
    assert mirror is not None, "the target must hold the mirror"
    assert (mirror["Status"], str(mirror["AmountPaid"])) == (3, "5.25")
    assert mirror["ReferenceNumber"] == f"[factsync:hostfact:{invoice['Identifier']}]"


async def test_an_invoice_created_but_not_yet_committed_is_read_again(pipeline: Pipeline) -> None:
    """HostFact fires invoice_is_created inside the request's transaction (invoice_api_controller::
    add_api_action begins one), so the first read may be told there is no such invoice. The sync reads again
    after a backoff and mirrors it once it is committed."""
    pipeline.hostfact.add_debtor(CompanyName="Company X")
    invoice = pipeline.hostfact.add_invoice(DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
    pipeline.hostfact.store.hidden.add(invoice["Identifier"])  # the request has not committed yet
    body = hook_body(
        "invoice_is_created",
        {"id": invoice["Identifier"], "Debtor": invoice["Debtor"], "InvoiceCode": invoice["InvoiceCode"]},
    )
    async with aiohttp.ClientSession() as session:
        url = f"{pipeline.running.listener_url}/hooks/hostfact"
        async with session.post(url, data=body, headers=sign(body)) as response:
            event_id = (await response.json())["event_id"]
    deadline = time.monotonic() + 10
    while not source_reads(pipeline.hostfact):
        assert time.monotonic() < deadline, "the worker never read the invoice"
        await asyncio.sleep(0.01)
    pipeline.hostfact.store.hidden.discard(invoice["Identifier"])  # committed

    created = await pipeline.settled(event_id)

    assert created.status == "done", created.reason
    assert created.tries >= 2
    assert pipeline.wefact.invoice_by_code(invoice["InvoiceCode"]) is not None


async def test_a_transient_fault_is_retried_to_success(pipeline: Pipeline) -> None:
    invoice = await pipeline.new_invoice()
    await pipeline.all_settled()
    pipeline.hostfact.faults.inject("http_500", controller="invoice", action="show", times=2)

    await pipeline.source.call("invoice", "markaspaid", {"Identifier": invoice["Identifier"]})
    events = await pipeline.all_settled()

    paid = next(e for e in events if e.action == "invoice_is_paid")
    assert paid.status == "done"
    assert paid.outcomes["sales"]["tries"] == 3
    assert paid.tries == 3


async def test_an_invoice_the_source_never_shows_lands_in_the_failed_store_with_the_reason(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    # A hook for an invoice HostFact's API does not know. HostFact fires invoice_is_created before it
    # commits the invoice, so the read is tried again (see the next test); one that never appears fails
    # once the tries are spent, with the API's reason.
    body = hook_body("invoice_is_paid", {"id": 999, "Debtor": 1, "InvoiceCode": "F0999"})
    async with aiohttp.ClientSession() as session:
        url = f"{pipeline.running.listener_url}/hooks/hostfact"
        async with session.post(url, data=body, headers=sign(body)) as response:
            assert response.status == 202
            event_id = (await response.json())["event_id"]

    failed = await pipeline.settled(event_id)

    # A failure is logged at WARNING with its reason, where INFO lines are filtered out.
    (warned,) = [
        record.msg
        for record in caplog.records
        if isinstance(record.msg, dict) and record.msg.get("event") == "sync.failed"
    ]
    assert warned["level"] == "warning" and "Invalid identifier for invoice" in warned["reason"]

    assert failed.status == "failed"
    assert "Invalid identifier for invoice" in failed.reason
    assert failed.tries == pipeline.settings.retry.max_tries
    assert failed.reason.startswith(f"sales: gave up after {failed.tries} tries: the source does not show")
    assert failed.last_exchange is not None
    assert failed.last_exchange["controller"] == "invoice" and failed.last_exchange["action"] == "show"
    assert failed.outcomes["sales"]["calls"] == ["hostfact: invoice.show 999"], "a failed try lists its calls"
    assert SOURCE_KEY not in str(failed.last_exchange)
    assert await pipeline.store.ids("failed") == [failed.id]


async def test_exhausted_retries_fail_the_event_and_an_operator_requeue_completes_it(
    pipeline: Pipeline,
) -> None:
    invoice = await pipeline.new_invoice()
    await pipeline.all_settled()
    pipeline.hostfact.faults.inject("http_503", controller="invoice", action="show", times=4)
    await pipeline.source.call("invoice", "markaspaid", {"Identifier": invoice["Identifier"]})

    events = await pipeline.all_settled()
    failed = next(e for e in events if e.action == "invoice_is_paid")
    assert failed.status == "failed"
    assert "gave up after 4 tries" in failed.reason
    assert failed.tries == 4

    previous, job = await pipeline.store.requeue(failed.id, by="test")
    assert previous == "failed" and job.endswith(":1")
    again = await pipeline.settled(failed.id)
    assert again.status == "done"
    assert again.generation == 1
    assert again.history[-1]["by"] == "test"
    assert await pipeline.store.ids("failed") == []


async def test_requeue_of_a_queued_or_running_event_does_nothing(pipeline: Pipeline) -> None:
    invoice = await pipeline.new_invoice()
    (created,) = await pipeline.all_settled()
    pipeline.hostfact.faults.inject("latency", seconds=1.0, controller="invoice", action="show", times=1)
    await pipeline.source.call("invoice", "markaspaid", {"Identifier": invoice["Identifier"]})
    paid_id = next(i for i in await pipeline.store.ids() if i != created.id)

    previous, job = await pipeline.store.requeue(paid_id, by="test")
    assert previous in ("queued", "running") and job == ""
    assert (await pipeline.settled(paid_id)).generation == 0


async def test_hooks_during_a_sync_cause_one_more_run_not_one_per_hook(pipeline: Pipeline) -> None:
    invoice = await pipeline.new_invoice()
    await pipeline.all_settled()
    reads_before = len(source_reads(pipeline.hostfact))
    # The first sync's read of the invoice takes a second; 30 hooks arrive meanwhile.
    pipeline.hostfact.faults.inject("latency", controller="invoice", action="show", seconds=1.0, times=1)
    await pipeline.source.call("invoice", "sendbyemail", {"Identifier": invoice["Identifier"]})
    for _ in range(30):
        await pipeline.source.call("invoice", "sendreminderbyemail", {"Identifier": invoice["Identifier"]})

    events = await pipeline.all_settled()

    assert len(events) == 32 and all(e.status == "done" for e in events)
    syncs = len(source_reads(pipeline.hostfact)) - reads_before
    assert 2 <= syncs <= 3, f"{syncs} syncs for 31 hooks: the run in progress and one (or two) after it"


async def test_a_sync_slower_than_its_budget_is_retried_not_dropped(redis: Redis, redis_url: str) -> None:
    from tests.stack import running_stack

    async with running_stack(redis_url, job_timeout=3) as stack:
        stack.hostfact.add_debtor(CompanyName="Company X")
        # The first read hangs past the sync's budget (job_timeout 3 s → about 2.4 s).
        stack.hostfact.faults.inject("latency", controller="invoice", action="show", seconds=4, times=1)
        await stack.call("invoice", "add", DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
        (event,) = await stack.settled(within=30)
    assert event.status == "done", event.reason
    assert event.tries == 2
