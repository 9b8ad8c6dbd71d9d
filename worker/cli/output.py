"""How the operator commands talk: tables, JSON, ages, a progress bar, exit statuses, clean errors.

Shared by every command module; it needs neither the settings nor the API client, so a light command
(`status`) stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import click
from redis.exceptions import ConnectionError as RedisConnectionError

from tasks.errors import ApiError, TransientError
from worker import operate, redisio

T = TypeVar("T")

# Exit status of a command that ran but leaves something for an operator: drift, failed syncs, refusals.
ATTENTION = 3
# Bulk actions on more than 20 events show a progress bar.
PROGRESS_FROM = 21
# Widest a table cell gets before it is cut with "…" (`show` prints everything).
CELL = 60


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """--since/--until: an ISO date or datetime, or an age such as 2h or 3d, as epoch seconds."""
    if value is None:
        return None
    try:
        return operate.parse_when(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


WHEN: dict[str, Any] = {"callback": _when, "metavar": "TIME"}
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table."
)


def run_or_fail(url: str, work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a Redis or API that cannot be reached is a clean error, not a traceback."""
    try:
        return asyncio.run(work)
    except RedisConnectionError as exc:
        raise click.ClickException(f"cannot reach Redis at {redisio.describe(url)}: {exc}") from None
    except TransientError as exc:
        # No retry loop here: the workers own the one; the command is safe to run again as a whole.
        raise click.ClickException(
            f"an API call failed ({exc.message}); nothing more was done, run it again"
        ) from None
    except ApiError as exc:
        raise click.ClickException(f"the API refused ({exc.message}); nothing more was done") from None
    except operate.NoWorker as exc:
        raise click.ClickException(str(exc)) from None


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def ago(seconds: float) -> str:
    """An age as a person reads it: 45s, 12m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}" if seconds < 10 * size else f"{int(seconds // size)}{unit}"
    return f"{seconds:.0f}s"


def local_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _cut(text: str, width: int = CELL) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "") -> None:
    cells = [[_cut(str(cell)) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo((indent + line).rstrip())


class ProgressReport:
    """A progress bar on a terminal; without one (cron, CI, a log) a line at every tenth of the way.

    Called as ``progress(done, total, eta)``; ``eta``, when given, is the seconds the API budget needs for
    the calls left (not a guess from the speed so far), shown beside the bar. Prints nothing when ``total``
    stays under ``minimum``, or when ``quiet`` (a command asked for ``--json``).
    """

    def __init__(self, label: str, *, minimum: int = 0, quiet: bool = False) -> None:
        self.label = label
        # A huge minimum: nothing reaches it (`--json` output stays the JSON alone).
        self.minimum = sys.maxsize if quiet else minimum
        self._bar: Any = None
        self._tenth = -1
        self._tty = sys.stderr.isatty()

    def __enter__(self) -> ProgressReport:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)

    def __call__(self, done: int, total: int, eta: float | None = None) -> None:
        if total < max(self.minimum, 1):
            return
        left = f"ETA {_duration(eta)} at the budget" if eta is not None and done < total else ""
        if self._tty:
            if self._bar is None:
                self._bar = click.progressbar(
                    length=total,
                    label=self.label,
                    file=sys.stderr,
                    show_eta=False,
                    item_show_func=lambda item: item,
                )
                self._bar.__enter__()
            self._bar.length = total
            self._bar.update(done - self._bar.pos, left)
            return
        tenth = done * 10 // total
        if tenth > self._tenth:
            self._tenth = tenth
            click.echo(
                f"{self.label}: {done}/{total} ({done * 100 // total}%)" + (f", {left}" if left else ""),
                err=True,
            )


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@contextlib.contextmanager
def ctrl_c_stops(what: str) -> Iterator[Callable[[], bool]]:
    """Inside a command's coroutine: the first Ctrl-C asks the work to stop (the callable then says True) and
    says so; a second one interrupts at once, as Ctrl-C always does."""
    loop = asyncio.get_running_loop()
    asked = False

    def stop() -> None:
        nonlocal asked
        asked = True
        click.echo(f"\nstopping {what}: what is done stays done (Ctrl-C again to quit at once)", err=True)
        loop.remove_signal_handler(signal.SIGINT)

    try:
        loop.add_signal_handler(signal.SIGINT, stop)
    except (NotImplementedError, RuntimeError, ValueError):
        # Not the main thread (a test's runner) or no signals here: Ctrl-C interrupts as it always did.
        yield lambda: asked
        return
    try:
        yield lambda: asked
    finally:
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


def notice(text: str) -> None:
    """A bulk command's word on why it waits (a ban pause), on its own line beside the progress bar."""
    click.echo("\n" + text, err=True)
