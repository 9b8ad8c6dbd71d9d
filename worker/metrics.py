"""Prometheus metrics, served by the listener at /metrics."""

from __future__ import annotations

from aiohttp import web

from worker.config import Settings


def setup_metrics(app: web.Application, settings: Settings) -> None:
    """Serve /metrics on the listener's application when metrics are on."""
    if not settings.metrics:
        return
