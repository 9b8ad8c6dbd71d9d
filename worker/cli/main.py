"""The `factsync` command line: the group, which imports a command's module only when that command runs.

`factsync --help` and the health check (`check`, every 30 s in a pod) must not pay for aiohttp, the API
client and the simulator; the commands live in modules by what they need (serve, health, ops, repair).
"""

from __future__ import annotations

from pathlib import Path

import click

from worker.cli.groups import LazyGroup

# Each command: its module and the first line of its help, shown by `factsync --help` without importing it
# (tests/test_cli.py holds each line to the command's own docstring).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("worker.cli.serve", "Run the listener and a worker in one process (small installations)."),
    "listen": ("worker.cli.serve", "Run only the listener: POST /hooks/{source}, GET /healthz, GET /readyz."),
    "worker": (
        "worker.cli.serve",
        "Run worker processes; start as many as the load needs, on any host that reaches Redis.",
    ),
    "check": (
        "worker.cli.health",
        "Exit 0 when a worker's heartbeat is fresh, 1 when none is; print one line saying why.",
    ),
    "remap": (
        "worker.cli.serve",
        "Rebuild a route's id mapping (source document -> mirror) from the markers in its target.",
    ),
    "status": (
        "worker.cli.status",
        "How factsync is doing: queue, events per status, the longest wait, workers and API budgets.",
    ),
    "events": (
        "worker.cli.look",
        "List and inspect events (every hook factsync accepted), and run them again.",
    ),
    "failed": (
        "worker.cli.look",
        "The failed store: events a sync could not complete, with the reason and the last API exchange.",
    ),
    "backfill": (
        "worker.cli.repair",
        "Sync every invoice of a route's source (or those modified since a time) into its target.",
    ),
    "audit": (
        "worker.cli.repair",
        "Compare a route's target with its source and print the drift.",
    ),
    "sandbox": (
        "worker.cli.serve",
        "Everything embedded: Redis, a simulated HostFact (source) and WeFact (target), listener and worker.",
    ),
}


@click.group(
    cls=LazyGroup,
    commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FACTSYNC_CONFIG",
    help="factsync.toml to read (default: $FACTSYNC_CONFIG, else ./factsync.toml when present). "
    "FACTSYNC_* environment variables override it, e.g. FACTSYNC_REDIS_URL.",
)
@click.option(
    "--log-json/--log-text", default=None, help="Log format (default: text on a terminal, else JSON)."
)
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.version_option(package_name="factsync")
@click.pass_context
def main(ctx: click.Context, config: Path | None, log_json: bool | None, log_level: str) -> None:
    """factsync keeps a WeFact (or HostFact) ledger in step with a HostFact administration.

    HostFact's hooks.php posts each invoice hook to the listener; workers read the invoice from HostFact's
    API and bring the target administration in step. Start with `factsync sandbox` to watch it work against
    simulated HostFact and WeFact administrations, with nothing to configure.

    \b
    Examples:
      factsync sandbox                       # everything embedded and simulated
      factsync -c factsync.toml run          # listener and worker in one process
      factsync -c factsync.toml listen       # listener only (scale workers separately)
      factsync -c factsync.toml worker -p 4  # four worker processes, restarted when they die
      factsync -c factsync.toml check        # exit 0 when some worker is alive
    """
    ctx.obj = {"config": config, "log_json": log_json, "log_level": log_level.upper()}


if __name__ == "__main__":
    main()
