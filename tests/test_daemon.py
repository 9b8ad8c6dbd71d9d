"""factsync as a daemon: the worker supervisor, `factsync check`, and what the daemons log.

Everything here runs `python -m worker.cli` as real processes against the session's Redis and the simulator.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tasks.client import ApiClient
from tasks.model import Administration
from tasks.simulator import SimAdministration, run_simulator
from tests.conftest import HOOK_SECRET, SOURCE_KEY, TARGET_KEY, make_settings
from tests.stack import LINES, pipeline_settings
from tests.test_worker_process import config_file
from worker import keys
from worker.embedded_redis import free_port
from worker.heartbeat import heartbeats
from worker.redisio import done
from worker.runtime import start
from worker.store import FINAL, EventStore
from worker.supervisor import Backoff, Supervisor
from worker.web.app import create_app

pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_")}


async def factsync(*args: str, stderr: int | None = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        *args,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        # A group of its own, so that a failing test can kill a supervisor and its children at once.
        start_new_session=True,
    )


async def until(condition: Callable[[], object], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await _truthy(condition()):
        assert time.monotonic() < deadline, f"not in time: {what}"
        await asyncio.sleep(0.05)


async def _truthy(value: object) -> bool:
    if asyncio.iscoroutine(value):
        value = await value
    return bool(value)


def two_free_ports() -> int:
    """A port whose next port is free too: a supervisor's two workers serve metrics on both."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


async def stop(process: asyncio.subprocess.Process) -> None:
    """Kill what is left of a process and its children (whose pipes would keep `wait()` waiting)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


# -- the supervisor ------------------------------------------------------------------------------------------


async def test_the_supervisor_restarts_a_killed_worker_and_stops_on_sigterm(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    port = two_free_ports()
    config = config_file(
        tmp_path / "factsync.toml", redis_url, "http://127.0.0.1:9/", "http://127.0.0.1:9/", 0.2
    )
    config.write_text(f"worker_metrics_port = {port}\n" + config.read_text())
    supervisor = await factsync("-c", str(config), "--log-json", "worker", "--processes", "2")
    try:
        await until(lambda: _fresh_pids(redis, 2), 20, "two workers beat")
        first = await _fresh_pids(redis, 2)
        assert supervisor.pid not in first, "the workers are children, not the supervisor"
        async with aiohttp.ClientSession() as session:
            for each in (port, port + 1):  # each child serves its own metrics, on the base port + its index
                async with session.get(f"http://127.0.0.1:{each}/metrics") as response:
                    assert response.status == 200

        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        await until(lambda: _new_pid(redis, first), 20, "a new worker replaces the killed one")
        assert supervisor.returncode is None, "the supervisor stays up"
        (new,) = await _fresh_pids(redis, 3) - first
        assert _alive(new) and not _alive(killed)

        supervisor.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(supervisor.communicate(), timeout=20)
        assert supervisor.returncode == 0, stderr.decode()[-2000:]
        # The children stopped and took their heartbeats down; only the killed one's is left, going stale.
        left = {beat.pid for beat in await heartbeats(redis)}
        assert left <= {killed}, f"heartbeats left by {left - {killed}}:\n{stderr.decode()[-4000:]}"
        lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
        exited = [line for line in lines if line.get("event") == "supervisor.child_exited"]
        assert [(line["pid"], line["code"]) for line in exited] == [(killed, -signal.SIGKILL)]
    finally:
        await stop(supervisor)


async def _fresh_pids(redis: Redis, count: int) -> set[int]:
    pids = {beat.pid for beat in await heartbeats(redis) if beat.fresh}
    return pids if len(pids) >= count else set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _new_pid(redis: Redis, seen: set[int]) -> bool:
    pids = {beat.pid for beat in await heartbeats(redis) if beat.fresh}
    return bool(pids - seen)


async def test_sigterm_to_the_supervisor_mid_job_loses_nothing(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    hostfact = SimAdministration(
        "hostfact",
        "hostfact",
        SOURCE_KEY,
        hooks_url=f"http://127.0.0.1:{port}/hooks/hostfact",
        hook_secret=HOOK_SECRET,
    )
    wefact = SimAdministration("wefact", "wefact", TARGET_KEY)
    debtor = hostfact.add_debtor(CompanyName="Company X")
    invoice = hostfact.add_invoice(DebtorCode=debtor["DebtorCode"], InvoiceLines=LINES, Status=2)
    async with run_simulator([hostfact, wefact]) as sim:
        settings = pipeline_settings(redis_url, sim.api_url("hostfact"), sim.api_url("wefact"), port)
        listener = await start(settings, redis_url, app=create_app, work=False)
        config = config_file(
            tmp_path / "factsync.toml", redis_url, sim.api_url("hostfact"), sim.api_url("wefact"), 0.2
        )
        supervisor = await factsync("-c", str(config), "worker", "--processes", "2")
        try:
            await until(lambda: _fresh_pids(redis, 2), 20, "two workers beat")
            # A worker's read of the invoice hangs for 5 s: it is mid-job when SIGTERM arrives.
            hostfact.faults.inject("latency", controller="invoice", action="show", seconds=5, times=1)
            async with ApiClient(settings.source("hostfact")) as source:
                await source.call("invoice", "markaspaid", {"Identifier": invoice["Identifier"]})
            await until(lambda: hostfact.count_calls("invoice", "show") >= 1, 15, "the sync started")

            supervisor.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(supervisor.communicate(), timeout=20)
            assert supervisor.returncode == 0, stderr.decode()[-2000:]

            store = EventStore.for_settings(redis, settings)
            (event_id,) = await store.ids()
            event = await store.get(event_id)
            assert event is not None and event.status not in FINAL, "the cancelled job must not be settled"
            # ... and gave its document back, so another worker need not wait for the lease to expire.
            assert await redis.keys(keys.lock("*", "*")) == []

            other = await start(settings, redis_url)
            try:
                await until(lambda: _settled(store, event_id), 15, "another worker finishes the event")
            finally:
                await other.stop()
            event = await store.get(event_id)
            assert event is not None and event.status == "done", event
            assert hostfact.count_calls("invoice", "show") == 2, "the interrupted sync ran once more"
        finally:
            await stop(supervisor)
            await listener.stop()


def test_the_restart_backoff_doubles_up_to_its_longest() -> None:
    backoff = Backoff(first=1, longest=60)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 7, 8, 50)] == [1, 2, 4, 8, 60, 60, 60]


async def test_a_crash_loop_does_not_spin(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    crash = f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"
    supervisor = Supervisor(
        [sys.executable, "-c", crash], 1, stop_timeout=5, backoff=Backoff(first=0.1, longest=10)
    )
    running = asyncio.ensure_future(supervisor.run())
    await asyncio.sleep(1.2)
    supervisor.stop()
    assert await asyncio.wait_for(running, 5) == 0
    # Starts at about 0, 0.1 (+ start-up), 0.3, 0.7 s: a handful, not hundreds.
    assert 2 <= len(starts.read_text()) <= 5


async def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    # Each child says it ignores SIGTERM in a file of its own: both must, before the supervisor stops them.
    ready = tmp_path / "ready"
    ready.mkdir()
    stubborn = (
        "import os, pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(ready)!r}, str(os.getpid())).touch(); time.sleep(60)"
    )
    supervisor = Supervisor([sys.executable, "-c", stubborn], 2, stop_timeout=0.5)
    running = asyncio.ensure_future(supervisor.run())
    await until(lambda: len(list(ready.iterdir())) == 2, 10, "both children started")
    started = time.monotonic()
    supervisor.stop()
    assert await asyncio.wait_for(running, 10) == 0
    assert time.monotonic() - started < 3
    assert all(child.returncode == -signal.SIGKILL for child in supervisor.children.values())


async def _settled(store: EventStore, event_id: str) -> bool:
    event = await store.get(event_id)
    return event is not None and event.status in FINAL


# -- factsync check ------------------------------------------------------------------------------------------


async def check(config: Path, *options: str) -> tuple[int, str]:
    process = await factsync("-c", str(config), "check", *options)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode is not None
    return process.returncode, stdout.decode() + stderr.decode()


async def test_check_passes_only_while_a_worker_heartbeat_is_fresh(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    config = config_file(
        tmp_path / "factsync.toml", redis_url, "http://127.0.0.1:9/", "http://127.0.0.1:9/", 0.2
    )
    code, output = await check(config)
    assert code == 1 and output.strip() == "unhealthy: no worker heartbeat"

    worker = await start(make_settings(redis_url), redis_url)
    try:
        code, output = await check(config)
        assert code == 0 and output.startswith("ok: 1 worker(s) with a fresh heartbeat"), output
        code, output = await check(config, "--this-host")
        assert code == 0 and f"on {socket.gethostname()}" in output, output
    finally:
        await worker.stop()

    # A worker that stopped beating (hung, or killed before it could take its heartbeat down).
    await done(
        redis.hset(
            keys.worker("gone:1:abc"),
            mapping={
                "host": "elsewhere",
                "pid": 1,
                "started_at": time.time() - 100,
                "beat_at": time.time() - 40,
            },
        )
    )
    await done(redis.sadd(keys.WORKERS, "gone:1:abc"))
    code, output = await check(config)
    # 40 s when it was written; a slow machine may take a second or two to run the check.
    newest = re.match(r"unhealthy: no fresh worker heartbeat: the newest is (\d+) s old", output)
    assert code == 1 and newest is not None and 40 <= int(newest.group(1)) <= 45, output
    code, output = await check(config, "--this-host")
    assert code == 1 and output.strip() == f"unhealthy: no worker heartbeat on {socket.gethostname()}", output


async def test_check_fails_when_redis_does_not_answer(tmp_path: Path) -> None:
    dead = f"redis://:hunter2-password@127.0.0.1:{free_port()}/0"
    config = config_file(tmp_path / "factsync.toml", dead, "http://127.0.0.1:9/", "http://127.0.0.1:9/", 0.2)
    code, output = await check(config)
    assert code == 1 and output.startswith("unhealthy: Redis does not answer"), output
    assert "hunter2" not in output


# -- structured logs -----------------------------------------------------------------------------------------


@pytest.fixture
async def distinctive() -> AsyncIterator[dict[str, str]]:
    yield {
        "source_key": "srcKEY" + secrets.token_hex(12),
        "target_key": "tgtKEY" + secrets.token_hex(12),
        "hook_secret": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
    }


async def test_a_whole_sync_logs_json_with_its_context_and_never_a_secret(
    redis: Redis, redis_url: str, tmp_path: Path, distinctive: dict[str, str]
) -> None:
    port = free_port()
    hostfact = SimAdministration(
        "hostfact",
        "hostfact",
        distinctive["source_key"],
        hooks_url=f"http://127.0.0.1:{port}/hooks/hostfact",
        hook_secret=distinctive["hook_secret"],
    )
    wefact = SimAdministration("wefact", "wefact", distinctive["target_key"])
    debtor = hostfact.add_debtor(CompanyName="Company X")
    async with run_simulator([hostfact, wefact]) as sim:
        config = tmp_path / "factsync.toml"
        config.write_text(
            f"""
redis_url = "{redis_url}"
listen_port = {port}
poll_delay = 0.01
shutdown_grace = 1

[retry]
base_delay = 0.05
max_delay = 0.2

[sources.hostfact]
api_url = "{sim.api_url("hostfact")}"
api_key = "{distinctive["source_key"]}"
hook_secrets = ["{distinctive["hook_secret"]}"]

[targets.wefact]
dialect = "wefact"
api_url = "{sim.api_url("wefact")}"
api_key = "{distinctive["target_key"]}"

[routes.sales]
source = "hostfact"
target = "wefact"
"""
        )
        # JSON is the default when stderr is not a terminal, as under systemd, docker or Kubernetes.
        listener = await factsync("-c", str(config), "--log-level", "DEBUG", "listen")
        worker = await factsync("-c", str(config), "--log-level", "DEBUG", "worker")
        try:
            await until(lambda: _listening(port), 20, "the listener listens")
            await until(lambda: _fresh_pids(redis, 1), 20, "the worker beats")
            # A failure on the way, so that error paths log too.
            wefact.faults.inject("html", controller="invoice", action="add", times=1)
            source = ApiClient(
                Administration(
                    name="hostfact", api_url=sim.api_url("hostfact"), api_key=distinctive["source_key"]
                )
            )
            async with source:
                added = await source.call(
                    "invoice", "add", {"DebtorCode": debtor["DebtorCode"], "InvoiceLines": LINES, "Status": 2}
                )
                await source.call("invoice", "markaspaid", {"Identifier": added["invoice"]["Identifier"]})
            store = EventStore(redis, dedup_ttl=3600, job_expiry_ms=3_600_000)
            await until(lambda: _all_settled(store, 2), 20, "both events handled")
        finally:
            for process in (listener, worker):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            outputs = [await asyncio.wait_for(p.communicate(), timeout=20) for p in (listener, worker)]
    code = added["invoice"]["InvoiceCode"]
    text = "".join(out.decode() + err.decode() for out, err in outputs)
    for secret in (*distinctive.values(), distinctive["hook_secret"].removeprefix("whsec_")):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    syncs = [line for line in lines if line.get("event", "").startswith(("sync.", "api "))]
    assert any(line["event"] == "sync.retry" for line in syncs), "the html fault was retried"
    assert any(line["event"] == "sync.finished" for line in syncs)
    api = [line for line in lines if line.get("logger") == "tasks.client"]
    assert api, "DEBUG shows each API call"
    for line in [*syncs, *api]:
        assert line["route"] == "sales" and line["invoice_code"] == code, line
        assert line["event_ids"] and all(e.startswith("evt_") for e in line["event_ids"]), line


async def _listening(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def _all_settled(store: EventStore, count: int) -> bool:
    events = [await store.get(event_id) for event_id in await store.ids()]
    return len(events) == count and all(e is not None and e.status in FINAL for e in events)
