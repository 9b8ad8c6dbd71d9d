"""The `factsync` command as an operator runs it: a real process, embedded Redis, signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import click
import pytest
from click.testing import CliRunner

from tests.test_config import GOOD
from worker.cli.groups import LazyGroup
from worker.cli.main import COMMANDS, main
from worker.embedded_redis import free_port

FACTSYNC = [sys.executable, "-m", "worker.cli"]


def env_without_factsync() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_") and k != "REDIS_URL"}


def test_help_teaches_the_commands() -> None:
    result = subprocess.run([*FACTSYNC, "--help"], capture_output=True, text=True, check=True)
    for command in ("run", "listen", "worker", "sandbox"):
        assert command in result.stdout
    assert "factsync.toml" in result.stdout


def test_the_commands_help_lines_are_their_own() -> None:
    """`factsync --help` (and `factsync events --help`) show each command's line without importing it; it
    must be the command's own."""
    groups: list[click.Group] = [main]
    checked = 0
    while groups:
        group = groups.pop()
        assert isinstance(group, LazyGroup)
        ctx = click.Context(group)
        for name, (_, line) in group.lazy.items():
            command = group.get_command(ctx, name)
            assert command is not None and command.help is not None, name
            first = " ".join(command.help.split("\n\n")[0].split())
            assert first == line, f"{name}: the group says {line!r}, its docstring {first!r}"
            checked += 1
        groups += [
            c for n in group.list_commands(ctx) if isinstance(c := group.get_command(ctx, n), click.Group)
        ]
    assert checked == len(COMMANDS) + 3, "replay, retry and discard load when run"
    listed = CliRunner().invoke(main, ["failed", "--help"])
    assert listed.exit_code == 0
    for name in ("list", "show", "retry", "discard"):
        assert f"  {name} " in listed.output, listed.output


def test_a_misspelt_command_gets_a_did_you_mean() -> None:
    result = CliRunner().invoke(main, ["statu"])
    assert result.exit_code == 2
    assert "No such command 'statu'. Did you mean 'status'?" in result.output
    result = CliRunner().invoke(main, ["failed", "retyr"])
    assert result.exit_code == 2 and "Did you mean 'retry'?" in result.output


# What only the daemons, remap and the sandbox need: a probe or an operator's look must not import it.
HEAVY = ("aiohttp", "tasks.client", "tasks.simulator", "worker.runtime")


@pytest.mark.parametrize(
    ("argv", "unused"),
    [
        (["--help"], (*HEAVY, "pydantic", "redis", "structlog")),
        # pydantic would nearly double their start-up: they read only where Redis is (worker/cli/reach.py).
        (["check"], (*HEAVY, "arq", "pydantic", "worker.config")),
        (["status"], (*HEAVY, "pydantic", "worker.config")),
        (["failed", "list"], (*HEAVY, "pydantic", "worker.config")),
        (["events", "show", "evt_x"], (*HEAVY, "pydantic", "worker.config")),
        (["failed", "retry", "evt_x"], HEAVY),
    ],
)
def test_help_and_the_probes_import_nothing_they_do_not_use(
    argv: list[str], unused: tuple[str, ...], redis_url: str
) -> None:
    probe = (
        "import sys\n"
        "from worker.cli.main import main\n"
        f"try: main({argv!r})\n"
        "except SystemExit: pass\n"
        f"print(sorted(m for m in {unused!r} if m in sys.modules), file=sys.stderr)\n"
    )
    env = env_without_factsync() | {"FACTSYNC_REDIS_URL": redis_url}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr


def test_a_bad_configuration_refuses_to_start_naming_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "factsync.toml"
    config.write_text(GOOD.replace('target = "wefact"\n', 'target = "nowhere"\n'))
    result = subprocess.run(
        [*FACTSYNC, "-c", str(config), "run"],
        capture_output=True,
        text=True,
        env=env_without_factsync(),
        timeout=30,
    )
    assert result.returncode != 0
    assert "routes.sales.target" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_one_clear_line_not_a_traceback(tmp_path: Path, redis_url: str) -> None:
    config = tmp_path / "factsync.toml"
    config.write_text(f'redis_url = "{redis_url}"\n' + GOOD)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*FACTSYNC, "-c", str(config), "listen", "--port", str(port)],
            capture_output=True,
            text=True,
            env=env_without_factsync(),
            timeout=30,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_without_a_shared_redis_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "factsync.toml"
    config.write_text(GOOD)
    result = subprocess.run(
        [*FACTSYNC, "-c", str(config), "worker"],
        capture_output=True,
        text=True,
        env=env_without_factsync(),
        timeout=30,
    )
    assert result.returncode != 0 and "FACTSYNC_REDIS_URL" in result.stderr


async def test_run_starts_an_embedded_redis_with_aof_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "factsync.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nlisten_port = {port}\n' + GOOD)
    process = await asyncio.create_subprocess_exec(
        *FACTSYNC,
        "-c",
        str(config),
        "--log-json",
        "run",
        env=env_without_factsync(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = await wait_ready(f"http://127.0.0.1:{port}/readyz")
        assert ready, "the listener never answered /readyz with Redis reachable"
        redis_dir = tmp_path / "data" / "redis"
        assert (redis_dir / "redis.conf").read_text().count("appendonly yes") == 1
        assert any(redis_dir.glob("appendonly*")), "the embedded Redis keeps an append-only file"
        redis_port = next(
            line.split()[1]
            for line in (redis_dir / "redis.conf").read_text().splitlines()
            if line.startswith("port ")
        )
        # redis-server retitles its process "redis-server 127.0.0.1:PORT".
        needle = f"127.0.0.1:{redis_port}"
        assert pids_of(needle), "an embedded redis-server should be running"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=40)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert b"shutdown.done" in stderr
    # factsync waits for its embedded redis-server to exit before it exits itself.
    assert not pids_of(needle), "the embedded Redis must stop with factsync"


async def test_a_killed_factsync_takes_its_embedded_redis_down(tmp_path: Path) -> None:
    """A SIGKILLed `factsync run` (on Linux) leaves no redis-server behind to hold its data directory: a
    second one started on the same directory would write the same append-only file."""
    port = free_port()
    config = tmp_path / "factsync.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nlisten_port = {port}\n' + GOOD)
    process = await asyncio.create_subprocess_exec(
        *FACTSYNC, "-c", str(config), "run", env=env_without_factsync(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert await wait_ready(f"http://127.0.0.1:{port}/readyz"), "the listener never became ready"
        conf = (tmp_path / "data" / "redis" / "redis.conf").read_text()
        needle = "127.0.0.1:" + next(x.split()[1] for x in conf.splitlines() if x.startswith("port "))
        assert pids_of(needle), "an embedded redis-server should be running"
    finally:
        process.kill()
        await process.wait()
    deadline = time.monotonic() + 10
    while pids_of(needle) and time.monotonic() < deadline:  # noqa: ASYNC110 (another process: no event)
        await asyncio.sleep(0.05)
    assert not pids_of(needle), "the embedded Redis outlived a SIGKILLed factsync"


async def wait_ready(url: str, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return True
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    return False


def pids_of(needle: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline and "redis-server" in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACTSYNC_CONFIG", raising=False)


def test_the_sandbox_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The README's first command: everything embedded, a demo invoice created, sent and paid."""
    result = subprocess.run(
        [*FACTSYNC, "sandbox", "--port", "0", "--data-dir", str(tmp_path / "sandbox"), "--exit-after-demo"],
        capture_output=True,
        text=True,
        env=env_without_factsync(),
        timeout=90,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    for action in ("invoice_is_created", "invoice_is_sent", "invoice_is_partly_paid", "invoice_is_paid"):
        assert action in result.stdout
    assert "4 events, 0 failed." in result.stdout
    assert "/hooks/hostfact" in result.stdout


@pytest.mark.slow
async def test_the_sandbox_is_a_place_to_learn_the_operator_tools(tmp_path: Path) -> None:
    """The sandbox writes its own factsync.toml: the operator commands and the dashboard work against it, and
    the printed fault route makes a sync fail on purpose, to be retried once it is healed."""
    data_dir = tmp_path / "sandbox"
    process = await asyncio.create_subprocess_exec(
        *FACTSYNC, "sandbox", "--port", "0", "--data-dir", str(data_dir),
        env=env_without_factsync(), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    printed = ""
    try:
        while "Ctrl-C stops the sandbox." not in printed:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert line, "the sandbox stopped: " + printed
            printed += line.decode()
        config = data_dir / "factsync.toml"
        assert f"configuration   {config}" in printed and config.stat().st_mode & 0o077 == 0
        values = tomllib.loads(config.read_text())
        token = values["dashboard"]["token"]
        assert f"token, shown once: {token}" in printed

        async def factsync(*args: str) -> Any:
            return await asyncio.to_thread(
                CliRunner().invoke, main, ["-c", str(config), *args], catch_exceptions=False
            )

        assert (await factsync("status")).exit_code == 0
        faults = values["targets"]["wefact"]["api_url"].replace("/api/v2/", "/_sim/faults")
        assert faults in printed
        source = values["sources"]["hostfact"]
        form = {
            "api_key": source["api_key"], "controller": "invoice", "action": "add", "DebtorCode": "DB0001",
            "Status": "2", "InvoiceLines[0][Description]": "Hosting", "InvoiceLines[0][PriceExcl]": "10",
        }  # fmt: skip
        async with aiohttp.ClientSession() as session:
            async with session.post(faults, json={"kind": "http_500", "times": 50}) as r:
                assert r.status == 200
            async with session.post(source["api_url"], data=form) as r:
                assert (await r.json())["status"] == "success"
            listed = await _until(lambda: factsync("failed", "list", "--json"), lambda r: r.output != "[]\n")
            (failure,) = json.loads(listed.output)
            assert "HTTP 500" in failure["reason"]
            async with session.delete(faults) as r:
                assert r.status == 200
            retried = await factsync("failed", "retry", "--all")
            assert retried.exit_code == 0, retried.output
            await _until(lambda: factsync("failed", "list", "--json"), lambda r: r.output == "[]\n")
            headers = {"Authorization": f"Bearer {token}"}
            port = values["listen_port"]
            async with session.get(f"http://127.0.0.1:{port}/dashboard", headers=headers) as r:
                assert r.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)


async def _until(run: Any, done: Any, within: float = 30) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await run()
        if done(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.3)
