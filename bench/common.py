"""Shared helpers for the benchmarks and drills: machine facts, keys, config files, worker processes."""

from __future__ import annotations

import base64
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Distinctive, so a grep of the logs for them means something.
HOOK_SECRET = "whsec_" + base64.b64encode(b"factsync-bench-hook-secret-0001").decode()
SOURCE_KEY = "bench-source-key-7c1d"
TARGET_KEY = "bench-target-key-3e9f"


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def config_text(
    redis_url: str,
    hostfact_url: str,
    target_url: str,
    *,
    target_rate: int = 600_000,
    source_rate: int = 600_000,
    max_jobs: int = 20,
    poll_delay: float = 0.01,
    job_timeout: float = 20,
    retry: dict[str, float] | None = None,
    ban_pause: float = 900,
    extra: str = "",
) -> str:
    retry = retry or {"max_tries": 8, "base_delay": 0.05, "max_delay": 1.0, "max_span": 300}
    retry_lines = "\n".join(f"{k} = {v}" for k, v in retry.items())
    return f"""
redis_url = "{redis_url}"
shutdown_grace = 1
poll_delay = {poll_delay}
job_timeout = {job_timeout}
max_jobs = {max_jobs}
ban_pause = {ban_pause}
metrics = false
{extra}

[retry]
{retry_lines}

[sources.hostfact]
api_url = "{hostfact_url}"
api_key = "{SOURCE_KEY}"
hook_secrets = ["{HOOK_SECRET}"]
rate_limit_per_minute = {source_rate}

[targets.wefact]
dialect = "wefact"
api_url = "{target_url}"
api_key = "{TARGET_KEY}"
rate_limit_per_minute = {target_rate}

[routes.sales]
source = "hostfact"
target = "wefact"
"""


class WorkerPool:
    """`python -m worker.cli -c CONFIG worker` subprocesses, logs to one file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_")}
        env["PYTHONPATH"] = str(ROOT)
        with self.log.open("ab") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "-c", str(self.config), "--log-json", "worker"],
                env=env,
                stdout=sink,
                stderr=sink,
                cwd=ROOT,
            )
        self.procs.append(proc)
        return proc

    def start(self, count: int) -> None:
        for _ in range(count):
            self.spawn()

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for proc in self.alive():
            try:
                times = psutil.Process(proc.pid).cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total
