"""The `factsync` command groups: one that suggests the command meant, one that imports commands lazily.

Only click here: `factsync --help` imports this and nothing heavier.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import click


class SuggestingGroup(click.Group):
    """A command group whose unknown-command error names the closest command ("Did you mean 'status'?")."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint} (`{ctx.command_path} --help` lists them)")
        return super().resolve_command(ctx, args)


class LazyGroup(SuggestingGroup):
    """A click group whose commands are imported by name when run (click's documented lazy loading).

    ``commands`` maps a name to its module (``"module"``, the command named like it, or
    ``"module:attribute"``) and the first line of its help, shown without importing it. Commands added
    the usual way (``@group.command()``) sit beside them.
    """

    def __init__(self, *args: Any, commands: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module), attribute or cmd_name.replace("-", "_"))
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}.{attribute or cmd_name} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        width = formatter.width - 6 - max((len(name) for name in self.list_commands(ctx)), default=0)
        rows = [
            (name, self.lazy[name][1] if name in self.lazy else self.commands[name].get_short_help_str(width))
            for name in self.list_commands(ctx)
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
