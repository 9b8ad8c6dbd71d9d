"""CLI start-up benchmark: wall time of `factsync --help`, `check`, `status` and `failed list`, with arq's CLI
as the yardstick (issue 11: a Kubernetes liveness probe runs `check` every 30 s).

Each command runs as a fresh process against an embedded Redis, --runs times; the figures are medians and
the slowest run. The reference row is `arq --help`, a small CLI on the same interpreter.

    python bench/cli_startup.py --runs 15 --out bench/results/cli-startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, median
from worker.embedded_redis import EmbeddedRedis

COMMANDS = [["--help"], ["check"], ["status"], ["failed", "list"]]


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="Processes per command (default 15).")
    parser.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    args = parser.parse_args()

    factsync = shutil.which("factsync") or str(Path(sys.executable).with_name("factsync"))
    arq = shutil.which("arq") or str(Path(sys.executable).with_name("arq"))
    results: dict[str, Any] = {"machine": machine(), "runs": args.runs, "commands": {}}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_")}
        env["FACTSYNC_REDIS_URL"] = server.url
        rows = [(" ".join(["factsync", *argv]), [factsync, *argv]) for argv in COMMANDS]
        rows.append(("arq --help (reference)", [arq, "--help"]))
        print(f"{'command':28} {'median s':>9} {'slowest s':>10}")
        for name, argv in rows:
            seconds = timed(argv, env, args.runs)
            results["commands"][name] = {
                "median_s": round(median(seconds), 3),
                "max_s": round(max(seconds), 3),
            }
            print(f"{name:28} {median(seconds):9.3f} {max(seconds):10.3f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
