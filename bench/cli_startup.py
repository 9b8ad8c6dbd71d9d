"""CLI start-up benchmark: wall time of `factsync --help`, `check`, `status` and `failed list`, with arq's CLI
as the yardstick (issue 11: a Kubernetes liveness probe runs `check` every 30 s).

Each command runs as a fresh process against an embedded Redis, --runs times, the commands taking turns
so a busy moment of the machine falls on all of them; the figures are medians and the slowest run, and
each median as a multiple of `arq --help`'s (a small CLI on the same interpreter): the ratio carries over
to another machine, the seconds do not.

By default the commands run from a fresh virtualenv with only `pip install .` in it, as a production
image has them: the test extras add imports (structlog loads rich when it is installed, 40-100 ms).
--here measures the interpreter running this script instead.

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


ROOT = Path(__file__).resolve().parent.parent


def timed(rows: list[tuple[str, list[str]]], env: dict[str, str], runs: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {name: [] for name, _ in rows}
    for _ in range(runs):
        for name, argv in rows:
            start = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def production_install(folder: Path) -> Path:
    """A virtualenv in ``folder`` with factsync and its runtime dependencies only; its bin folder."""
    print("installing factsync into a fresh virtualenv (pip install .) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # From a copy: a build in the repository would leave build/ behind.
    source = folder / "src"
    skip = shutil.ignore_patterns(".venv", ".git", "var", "build", "*.egg-info")
    shutil.copytree(ROOT, source, ignore=skip)
    subprocess.run([*pip, str(source)], check=True)
    return folder / "bin"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="Processes per command (default 15).")
    parser.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    parser.add_argument(
        "--here", action="store_true", help="Measure this interpreter's install, not a fresh production one."
    )
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine(), "runs": args.runs, "commands": {}}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        bin_dir = Path(sys.executable).parent if args.here else production_install(Path(tmp) / "venv")
        results["install"] = "this interpreter's" if args.here else "fresh virtualenv, pip install ."
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_")}
        env["FACTSYNC_REDIS_URL"] = server.url
        reference = "arq --help (reference)"
        rows = [(" ".join(["factsync", *argv]), [str(bin_dir / "factsync"), *argv]) for argv in COMMANDS]
        rows.append((reference, [str(bin_dir / "arq"), "--help"]))
        seconds = timed(rows, env, args.runs)
        yardstick = median(seconds[reference])
        print(f"{'command':28} {'median s':>9} {'slowest s':>10} {'x arq':>6}")
        for name, _ in rows:
            ratio = median(seconds[name]) / yardstick
            results["commands"][name] = {
                "median_s": round(median(seconds[name]), 3),
                "max_s": round(max(seconds[name]), 3),
                "x_arq_help": round(ratio, 2),
            }
            print(f"{name:28} {median(seconds[name]):9.3f} {max(seconds[name]):10.3f} {ratio:6.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
