"""Running the simulator on a real socket: ``async with run_simulator([...]) as sim``."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from tasks.simulator.administration import SimAdministration
from tasks.simulator.app import ADMINS, create_app


@dataclass(frozen=True)
class RunningSimulator:
    """A started simulator: where it listens and the administrations it serves."""

    base_url: str
    app: web.Application

    def api_url(self, name: str) -> str:
        """The API v2 endpoint of administration ``name`` (``http://127.0.0.1:PORT/name/api/v2/``)."""
        self.admin(name)
        return f"{self.base_url}/{name}/api/v2/"

    def control_url(self, name: str) -> str:
        return f"{self.base_url}/{name}/_sim/"

    def admin(self, name: str) -> SimAdministration:
        return self.app[ADMINS][name]

    @property
    def admins(self) -> list[SimAdministration]:
        return list(self.app[ADMINS].values())

    async def drain_hooks(self) -> None:
        """Wait until every administration's fired hooks have been delivered."""
        for admin in self.admins:
            await admin.drain_hooks()


@asynccontextmanager
async def run_simulator(
    admins: Iterable[SimAdministration], host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningSimulator]:
    """Serve ``admins`` on ``host:port`` (a free port when 0) until the block exits."""
    app = create_app(admins)
    # Hung "timeout" faults are woken on shutdown, so a short grace period is enough.
    runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    try:
        yield RunningSimulator(f"http://{url_host}:{bound_port}", app)
    finally:
        await runner.cleanup()
        sock.close()
