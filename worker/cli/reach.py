"""Reaching Redis from a light command (`check`, `status`): where it is, from the raw configuration.

Those commands read Redis alone, so they read only `redis_url` and `data_dir`, never the validated
`Settings`: pydantic alone would nearly double their start-up (BENCHMARKS.md, CLI start-up). The rest of
the file may even be wrong: the workers they look at run on the configuration they started with.
"""

from __future__ import annotations

from pathlib import Path

import click

from worker import redisio
from worker.embedded_redis import running_redis_url
from worker.logs import configure_logging
from worker.rawconfig import DEFAULT_DATA_DIR, ConfigError, config_path, read_config

REDIS_SETTINGS = ("redis_url", "data_dir")


def find_redis(ctx: click.Context) -> str:
    """The Redis the command talks to, or a clean exit naming the bad setting; configures the logs.

    LookupError, saying why, when none is configured and no embedded one is running."""
    try:
        configured, data_dir = _redis_settings(ctx.obj["config"])
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(
        secrets=redisio.secrets_in(configured), json=ctx.obj["log_json"], level=ctx.obj["log_level"]
    )
    return running_redis_url(configured, data_dir)


def redis_url(ctx: click.Context) -> str:
    """As `find_redis`, with no Redis to find a clean exit too."""
    try:
        return find_redis(ctx)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None


def _redis_settings(path: Path | None) -> tuple[str | None, Path]:
    """The configured Redis URL (checked as `Settings` checks it) and the data folder of an embedded one."""
    raw = read_config(config_path(path), REDIS_SETTINGS)
    url = raw.text("redis_url")
    if url is not None:
        try:
            redisio.parse(url)
        except ValueError as exc:  # names what is wrong, never the password
            raise raw.error([f"{raw.named(('redis_url',))}: {exc}"]) from None
    return url, Path(raw.text("data_dir") or DEFAULT_DATA_DIR)
