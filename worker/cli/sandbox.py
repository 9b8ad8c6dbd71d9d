"""`factsync sandbox`: the whole pipeline on one machine with nothing to configure.

An embedded Redis, a simulated HostFact (the source, firing signed hooks at the listener) and WeFact (the
target), the listener and a worker; a short demo acts on the HostFact and shows what factsync did.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import signal
import time
from pathlib import Path

import click
from redis.asyncio import Redis

from tasks.client import ApiClient
from tasks.simulator import SimAdministration, run_simulator
from worker.config import Settings
from worker.embedded_redis import EmbeddedRedis, free_port
from worker.runtime import start
from worker.store import FINAL, Event, EventStore
from worker.web.app import create_app


async def run_sandbox(*, port: int, data_dir: Path, demo: bool, exit_after_demo: bool) -> int:
    port = port or free_port()
    hook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    source_key, target_key = secrets.token_hex(12), secrets.token_hex(12)
    hostfact = SimAdministration(
        "hostfact",
        "hostfact",
        source_key,
        hooks_url=f"http://127.0.0.1:{port}/hooks/hostfact",
        hook_secret=hook_secret,
    )
    wefact = SimAdministration("wefact", "wefact", target_key)
    with EmbeddedRedis(data_dir / "redis") as server:
        # The simulated administrations start empty every time; so does the sandbox's Redis.
        await _flush(server.url)
        async with run_simulator([hostfact, wefact]) as sim:
            settings = Settings(
                redis_url=server.url,
                data_dir=data_dir,
                listen_port=port,
                poll_delay=0.02,
                sources={
                    "hostfact": {
                        "api_url": sim.api_url("hostfact"),
                        "api_key": source_key,
                        "hook_secrets": [hook_secret],
                    }
                },
                targets={
                    "wefact": {"api_url": sim.api_url("wefact"), "api_key": target_key, "dialect": "wefact"}
                },
                routes={"sales": {"source": "hostfact", "target": "wefact", "ledger": "sales"}},
            )
            running = await start(settings, server.url, app=create_app)
            click.echo(
                "\nfactsync sandbox is running\n"
                f"  listener        {running.listener_url}/hooks/hostfact  (health: /healthz, /readyz)\n"
                f"  HostFact API    {sim.api_url('hostfact')}  (source; fires its hooks at the listener)\n"
                f"  WeFact API      {sim.api_url('wefact')}  (target)\n"
                f"  Redis           {server.url}  (embedded, AOF in {server.data_dir})\n"
            )
            code = 0
            try:
                if demo:
                    code = await _demo(settings, server.url)
                    for mirror in wefact.invoices.values():
                        click.echo(
                            f"WeFact now holds {mirror['InvoiceCode']}: status {mirror['Status']}, "
                            f"total {mirror['AmountIncl']}, paid {mirror['AmountPaid']}, "
                            f"marker {mirror['ReferenceNumber']}"
                        )
                    click.echo("")
                if not exit_after_demo:
                    click.echo("Act on the HostFact API to fire more hooks; Ctrl-C stops the sandbox.")
                    await _until_signal()
            finally:
                await running.stop()
    return code


async def _flush(url: str) -> None:
    redis = Redis.from_url(url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _demo(settings: Settings, redis_url: str) -> int:
    """Create, send, part-pay and pay an invoice in the simulated HostFact, one step at a time, and print
    what factsync did with each hook."""
    click.echo("Demo: an invoice is created (as a draft), sent, part-paid and paid in HostFact...")
    redis = Redis.from_url(redis_url)
    store = EventStore.for_settings(redis, settings)
    try:
        async with ApiClient(settings.source("hostfact")) as hostfact:
            answer = await hostfact.call("debtor", "add", {"CompanyName": "Company X", "SurName": "Jackson"})
            lines = [
                {"Description": "Setupfee", "PriceExcl": "150", "TaxPercentage": "21"},
                {"Description": "Domain example.com", "PriceExcl": "15", "TaxPercentage": "21"},
            ]
            added = await hostfact.call(
                "invoice", "add", {"DebtorCode": answer["debtor"]["DebtorCode"], "InvoiceLines": lines}
            )
            invoice = {"Identifier": added["invoice"]["Identifier"]}
            events = await _settled(store)
            # Each step waits for the last one's hooks to be handled, so each shows its own sync.
            for action, params in (
                ("sendbyemail", invoice),
                ("partpayment", invoice | {"AmountPaid": "5.25"}),
                ("markaspaid", invoice),
            ):
                await hostfact.call("invoice", action, params)
                events = await _settled(store)
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()
    click.echo(f"\n{'event':<30} {'action':<26} {'status':<8} what factsync did")
    for event in events:
        outcome = next(iter(event.outcomes.values()), {})
        what = outcome.get("detail") or outcome.get("reason") or event.reason
        click.echo(f"{event.id:<30} {event.action:<26} {event.status:<8} {what}")
    settled = bool(events) and all(e.status in FINAL for e in events)
    failed = [e for e in events if e.status == "failed"]
    click.echo(
        f"\n{len(events)} events, {len(failed)} failed{'' if settled else ', some still not settled'}.\n"
    )
    return 0 if settled and not failed else 1


async def _settled(store: EventStore, within: float = 30) -> list[Event]:
    """Every event so far, oldest first, once all are handled (or the time is up)."""
    deadline = time.monotonic() + within
    while True:
        events = [e for e in [await store.get(i) for i in await store.ids(newest_first=False)] if e]
        if (events and all(e.status in FINAL for e in events)) or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.05)
