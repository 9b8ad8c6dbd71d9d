"""Run the simulator standalone: ``python -m tasks.simulator --admin NAME:hostfact|wefact:KEY ...``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import cast

from tasks.protocol import Dialect
from tasks.simulator.administration import SimAdministration
from tasks.simulator.hooks import HookMode
from tasks.simulator.runner import run_simulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.simulator",
        description="Serve simulated HostFact/WeFact administrations (API v2) for sandboxes and benchmarks.",
    )
    parser.add_argument(
        "--admin",
        action="append",
        metavar="NAME:DIALECT:API_KEY",
        help="an administration to serve; DIALECT is hostfact or wefact (repeatable; "
        "default: source:hostfact:source-key and target:wefact:target-key)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8089, help="port to listen on, 0 for a free one (default 8089)"
    )
    parser.add_argument("--hooks-url", help="where hostfact administrations POST their hooks")
    parser.add_argument(
        "--hook-secret",
        default=os.environ.get("SIMULATOR_HOOK_SECRET"),
        help="Standard Webhooks secret (whsec_<base64>) to sign hooks with; default $SIMULATOR_HOOK_SECRET, "
        "which keeps it out of the process list",
    )
    parser.add_argument(
        "--hook-delivery",
        choices=("inline", "background"),
        default="inline",
        help="inline: inside the API request, as HostFact does (default); background: after answering",
    )
    parser.add_argument(
        "--rate-limit-per-minute",
        type=int,
        help="wefact calls per minute per IP (default unlimited; live: 500)",
    )
    parser.add_argument(
        "--rate-limit-per-hour", type=int, help="wefact calls per hour per IP (default unlimited; live: 5000)"
    )
    parser.add_argument("--ban-seconds", type=float, default=600.0, help="how long a wefact ban lasts")
    parser.add_argument("--seed", type=int, default=0, help="seed for probabilistic faults")
    return parser


def _admins(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[SimAdministration]:
    specs = args.admin or ["source:hostfact:source-key", "target:wefact:target-key"]
    admins = []
    for spec in specs:
        name, _, rest = spec.partition(":")
        dialect, _, api_key = rest.partition(":")
        if dialect not in ("hostfact", "wefact") or not name or not api_key:
            parser.error(f"--admin {spec!r}: expected NAME:hostfact|wefact:API_KEY")
        hostfact = dialect == "hostfact"
        try:
            admins.append(
                SimAdministration(
                    name,
                    cast(Dialect, dialect),
                    api_key,
                    hooks_url=args.hooks_url if hostfact else None,
                    hook_secret=args.hook_secret if hostfact else None,
                    rate_limit_per_minute=None if hostfact else args.rate_limit_per_minute,
                    rate_limit_per_hour=None if hostfact else args.rate_limit_per_hour,
                    seed=args.seed,
                    hook_delivery=cast(HookMode, args.hook_delivery),
                    ban_seconds=args.ban_seconds,
                )
            )
        except ValueError as exc:
            parser.error(str(exc))
    return admins


async def _serve(admins: list[SimAdministration], host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with run_simulator(admins, host, port) as sim:
        print(f"factsync simulator listening on {sim.base_url}", flush=True)
        for admin in sim.admins:
            hooks = f", hooks -> {admin.hooks.url}" if admin.hooks.url else ""
            print(f"  {admin.name} ({admin.dialect}): {sim.api_url(admin.name)}{hooks}", flush=True)
            print(
                f"    control: {sim.control_url(admin.name)} (faults, state, calls, hooks, reset)", flush=True
            )
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    admins = _admins(args, parser)
    asyncio.run(_serve(admins, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
