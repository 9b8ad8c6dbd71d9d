"""The operators' web dashboard under /dashboard (aiohttp + jinja2); off unless credentials are configured."""

from __future__ import annotations

from aiohttp import web

from worker.config import Settings


def setup_dashboard(app: web.Application, settings: Settings) -> None:
    """Mount the dashboard on the listener's application when credentials are configured."""
    if not settings.dashboard.enabled:
        return
