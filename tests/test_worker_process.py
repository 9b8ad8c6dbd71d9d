"""A worker as its own process: SIGTERM in the middle of a job loses nothing; the job runs again elsewhere."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from redis.asyncio import Redis

from tasks.client import ApiClient
from tasks.simulator import SimAdministration, run_simulator
from tests.conftest import HOOK_SECRET, SOURCE_KEY, TARGET_KEY
from tests.stack import LINES, hostfact_firing_at, pipeline_settings
from worker.embedded_redis import free_port
from worker.runtime import start
from worker.store import FINAL, EventStore
from worker.web.app import create_app


def config_file(path: Path, redis_url: str, hostfact_url: str, wefact_url: str, grace: float) -> Path:
    path.write_text(
        f"""
redis_url = "{redis_url}"
shutdown_grace = {grace}
poll_delay = 0.01

[retry]
base_delay = 0.05
max_delay = 0.2

[sources.hostfact]
api_url = "{hostfact_url}"
api_key = "{SOURCE_KEY}"
hook_secrets = ["{HOOK_SECRET}"]

[targets.wefact]
dialect = "wefact"
api_url = "{wefact_url}"
api_key = "{TARGET_KEY}"

[routes.sales]
source = "hostfact"
target = "wefact"
"""
    )
    return path


async def test_sigterm_mid_job_loses_nothing(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    hostfact = hostfact_firing_at(port)
    wefact = SimAdministration("wefact", "wefact", TARGET_KEY)
    debtor = hostfact.add_debtor(CompanyName="Company X")
    invoice = hostfact.add_invoice(DebtorCode=debtor["DebtorCode"], InvoiceLines=LINES, Status=2)
    async with run_simulator([hostfact, wefact]) as sim:
        settings = pipeline_settings(redis_url, sim.api_url("hostfact"), sim.api_url("wefact"), port)
        listener = await start(settings, redis_url, app=create_app, work=False)
        config = config_file(
            tmp_path / "factsync.toml", redis_url, sim.api_url("hostfact"), sim.api_url("wefact"), 0.2
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_")}
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker.cli",
            "-c",
            str(config),
            "worker",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            # The worker's read of the invoice hangs for 5 s: it is mid-job when SIGTERM arrives.
            hostfact.faults.inject("latency", controller="invoice", action="show", seconds=5, times=1)
            async with ApiClient(settings.source("hostfact")) as source:
                await source.call("invoice", "markaspaid", {"Identifier": invoice["Identifier"]})
            await _until(lambda: hostfact.count_calls("invoice", "show") == 1, 15)

            worker.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(worker.communicate(), timeout=20)
            assert worker.returncode == 0, stderr.decode()[-2000:]

            store = EventStore.for_settings(redis, settings)
            (event_id,) = await store.ids()
            event = await store.get(event_id)
            assert event is not None and event.status not in FINAL, "the cancelled job must not be settled"

            # Another worker takes over the same job.
            other = await start(settings, redis_url)
            try:
                deadline = time.monotonic() + 15
                while (event := await store.get(event_id)) and event.status not in FINAL:
                    assert time.monotonic() < deadline, event
                    await asyncio.sleep(0.05)
            finally:
                await other.stop()
            assert event is not None and event.status == "done"
            assert hostfact.count_calls("invoice", "show") == 2, (
                "the interrupted sync ran once more, elsewhere"
            )
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
            await listener.stop()


async def _until(condition, within: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
