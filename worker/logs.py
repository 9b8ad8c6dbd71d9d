"""Structured logs (structlog): JSON lines for daemons, readable lines on a terminal; no secret printed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from tasks.redact import Redactor


class RedactSecrets:
    """A structlog processor that blanks every configured secret wherever it appears in an event."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.redactor = Redactor(secrets, min_length=4)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        redacted: MutableMapping[str, Any] = self.redactor.value(dict(event))
        return redacted


def configure_logging(*, secrets: Iterable[str] = (), json: bool | None = None, level: str = "INFO") -> None:
    """Route structlog and the stdlib (arq, aiohttp) through one renderer with secret redaction."""
    if json is None:
        json = not sys.stderr.isatty()
    redact = RedactSecrets(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    # A stdlib record's `extra` fields (the API client's administration, controller, outcome, ...) become
    # fields of the line; redacted like the rest.
    foreign = [*shared[:-1], structlog.stdlib.ExtraAdder(), redact]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # filter_by_level first: a line below the level costs nothing more (hook.accepted is DEBUG, one per
        # hook). Not in foreign_pre_chain: stdlib records reach the formatter already filtered.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign,
            # `shared` (in structlog's chain, or as foreign_pre_chain for stdlib records) already redacted.
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
