"""What every `factsync` command shares: the settings from --config and the environment, and the logs."""

from __future__ import annotations

from typing import Any

import click

from worker.config import ConfigError, Settings, load_settings
from worker.logs import configure_logging


def secrets_of(settings: Settings) -> list[str]:
    """Every key and hook secret the configuration holds: the logs blank them wherever they appear."""
    values = [s.api_key.get_secret_value() for s in settings.sources.values()]
    values += [t.api_key.get_secret_value() for t in settings.targets.values()]
    values += [h.get_secret_value() for s in settings.sources.values() for h in s.hook_secrets]
    for secret in (settings.dashboard.token, settings.dashboard.password):
        if secret is not None:
            values.append(secret.get_secret_value())
    return values


def load_settings_for(ctx: click.Context, **overrides: Any) -> Settings:
    """The settings for a command, or a clean exit naming the bad setting; configures the logs."""
    try:
        settings = load_settings(ctx.obj["config"], **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(secrets=secrets_of(settings), json=ctx.obj["log_json"], level=ctx.obj["log_level"])
    return settings
