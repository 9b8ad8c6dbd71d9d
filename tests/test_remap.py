"""`factsync remap`: the id mapping rebuilt from the markers in the target after Redis lost it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from click.testing import CliRunner
from redis.asyncio import Redis

from tests.conftest import HOOK_SECRET, SOURCE_KEY, TARGET_KEY
from tests.stack import LINES as HOSTFACT_SEED_LINES
from tests.stack import running_stack
from worker import keys
from worker.cli.main import main
from worker.ratelimit import SharedRateLimit


async def test_remap_rebuilds_the_mapping_from_the_markers(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with running_stack(redis_url) as stack:
        stack.hostfact.add_debtor(CompanyName="Company X")
        created = []
        for _ in range(3):
            answer = await stack.call(
                "invoice", "add", DebtorCode="DB0001", InvoiceLines=HOSTFACT_SEED_LINES, Status=2
            )
            created.append(answer["invoice"]["Identifier"])
        await stack.call("invoice", "credit", Identifier=created[0])
        await stack.settled()
        expected = {
            source_id: (await redis.get(keys.mapping("sales", "invoice", str(source_id)))).decode()
            for source_id in created
        }
        assert len(set(expected.values())) == 3
        for key in await redis.keys("factsync:map:*"):
            await redis.delete(key)

        config = tmp_path / "factsync.toml"
        config.write_text(
            f"""
redis_url = "{redis_url}"
[sources.hostfact]
api_url = "{stack.settings.sources["hostfact"].api_url}"
api_key = "{SOURCE_KEY}"
hook_secrets = ["{HOOK_SECRET}"]
[targets.target]
dialect = "wefact"
api_url = "{stack.settings.targets["target"].api_url}"
api_key = "{TARGET_KEY}"
[routes.sales]
source = "hostfact"
target = "target"
"""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker.cli",
            "-c",
            str(config),
            "remap",
            "--route",
            "sales",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()
        assert "3 mirror(s) mapped" in stdout.decode()
        for source_id, target_id in expected.items():
            stored = await redis.get(keys.mapping("sales", "invoice", str(source_id)))
            assert stored is not None and stored.decode() == target_id

        # During a ban pause on the target: one clear line and exit 1, not a traceback.
        await SharedRateLimit(redis, {}).pause("target", 120)
        paused = await asyncio.to_thread(
            CliRunner().invoke, main, ["-c", str(config), "remap", "--route", "sales"], catch_exceptions=False
        )
        assert paused.exit_code == 1, paused.output
        assert "calls to target are paused after a ban" in paused.stderr and "try again in" in paused.stderr
        assert "Traceback" not in paused.output


async def test_remap_names_an_unknown_route(tmp_path: Path) -> None:
    from tests.test_config import GOOD

    config = tmp_path / "factsync.toml"
    config.write_text(GOOD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        "-c",
        str(config),
        "remap",
        "--route",
        "nope",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode != 0 and "no route named 'nope'" in stderr.decode()
