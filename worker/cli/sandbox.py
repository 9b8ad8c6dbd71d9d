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

from tasks.client import ApiClient
from tasks.simulator import SimAdministration, run_simulator
from worker import redisio
from worker.config import Settings, load_settings
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
            dashboard_token = secrets.token_urlsafe(24)
            config = write_config(
                data_dir / "factsync.toml",
                redis_url=server.url,
                port=port,
                data_dir=data_dir,
                hostfact=(sim.api_url("hostfact"), source_key, hook_secret),
                wefact=(sim.api_url("wefact"), target_key),
                dashboard_token=dashboard_token,
            )
            settings = load_settings(config)
            running = await start(settings, server.url, app=create_app)
            hostfact_api, wefact_api = sim.api_url("hostfact"), sim.api_url("wefact")
            faults = wefact_api.replace("/api/v2/", "/_sim/faults")
            url = running.listener_url
            fail = """'{"kind": "http_500", "times": 50}'"""
            invoice = "-d DebtorCode=DB0001 -d Status=2 -d 'InvoiceLines[0][Description]=Hosting'"
            lines = [
                "",
                "factsync sandbox is running",
                f"  listener        {url}/hooks/hostfact  (health: /healthz, /readyz)",
                f"  dashboard       {url}/dashboard  (token, shown once: {dashboard_token})",
                f"  HostFact API    {hostfact_api}  (source, api_key {source_key}; fires its hooks)",
                f"  WeFact API      {wefact_api}  (target, api_key {target_key})",
                f"  Redis           {server.url}  (embedded, AOF in {server.data_dir})",
                f"  configuration   {config}  (for the operator commands below)",
                "",
                "Try, in another terminal, while this runs:",
                f"  factsync -c {config} status",
                "  # a new invoice in HostFact; its hook reaches factsync:",
                f"  curl -s {hostfact_api} -d api_key={source_key} -d controller=invoice -d action=add \\",
                f"       {invoice} -d 'InvoiceLines[0][PriceExcl]=10'",
                "  # HostFact's back office credits line 1 of invoice 1, a partial credit (the lines: "
                f"{hostfact_api.replace('/api/v2/', '/_sim/state')}):",
                f"""  curl -s {hostfact_api.replace("/api/v2/", "/_sim/credit-partly")} """
                """-d '{"Identifier": 1, "Lines": {"1": 1}}'""",
                f"  curl -s {faults} -d {fail}   # WeFact fails from now on",
                f"  factsync -c {config} failed list            # what failed, and why",
                f"  curl -s -X DELETE {faults}                  # WeFact is well again",
                f"  factsync -c {config} failed retry --all     # or the dashboard's retry button",
                f"  factsync -c {config} audit --route sales    # the target against the source",
                "",
            ]
            click.echo("\n".join(lines))
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
                    click.echo("Ctrl-C stops the sandbox.")
                    await _until_signal()
            finally:
                await running.stop()
    return code


def write_config(
    path: Path,
    *,
    redis_url: str,
    port: int,
    data_dir: Path,
    hostfact: tuple[str, str, str],
    wefact: tuple[str, str],
    dashboard_token: str,
) -> Path:
    """The sandbox's own factsync.toml, so that the operator commands and the dashboard work against it. It
    holds the simulated administrations' keys: readable by its owner only."""
    hostfact_url, source_key, hook_secret = hostfact
    wefact_url, target_key = wefact
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""# Written by `factsync sandbox` at each start: the simulated administrations of this run.
redis_url = "{redis_url}"
data_dir = "{data_dir.resolve()}"
listen_port = {port}
poll_delay = 0.02

[dashboard]
token = "{dashboard_token}"

[sources.hostfact]
api_url = "{hostfact_url}"
api_key = "{source_key}"
hook_secrets = ["{hook_secret}"]

[targets.wefact]
dialect = "wefact"
api_url = "{wefact_url}"
api_key = "{target_key}"

[retry]
# Short, so a failure made on purpose lands in the failed store within seconds.
max_tries = 3
base_delay = 0.2
max_delay = 1.0

[routes.sales]
source = "hostfact"
target = "wefact"
ledger = "sales"
"""
    )
    path.chmod(0o600)
    return path


async def _flush(url: str) -> None:
    redis = redisio.connect(url, retry_for=redisio.COMMAND_RETRY_FOR)
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
    redis = redisio.connect(redis_url, retry_for=redisio.COMMAND_RETRY_FOR)
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
