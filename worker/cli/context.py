"""What every `factsync` command shares: the settings from --config and the environment, and the logs."""

from __future__ import annotations

from typing import Any

import click

from worker.config import ConfigError, Settings, load_settings
from worker.logs import configure_logging


def load_settings_for(ctx: click.Context, *, secrets: bool = True, **overrides: Any) -> Settings:
    """The settings for a command, or a clean exit naming the bad setting; configures the logs.

    ``secrets=False`` for the commands that only read and write Redis (status, events, failed, check): a
    health check or an operator's look needs no API key or hook secret.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = load_settings(ctx.obj["config"], secrets=secrets, **given)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(secrets=settings.secrets(), json=ctx.obj["log_json"], level=ctx.obj["log_level"])
    return settings
