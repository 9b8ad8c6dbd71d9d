"""The operators' commands of `factsync`: status, events, failed events, replay, backfill, audit."""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    """Add the operators' commands to the `factsync` command group."""
