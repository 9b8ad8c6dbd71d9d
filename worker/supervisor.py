"""`factsync worker --processes N`: N worker processes under a small supervisor that restarts a dead one.

Each child is a whole `factsync worker --processes 1` (worker.runtime: an arq worker with its own heartbeat
and, when `worker_metrics_port` is set, its own metrics port), started as a subprocess rather than forked,
so that a child starts from a clean interpreter, with no event loop, Redis connection or lock inherited.

A child that exits while the supervisor is not stopping is restarted after a backoff that doubles with
every crash in a row (a child that ran `stable_after` seconds was healthy, and starts the count again), so
a child that cannot start (Redis away, a bad setting) does not spin. On SIGTERM or SIGINT the supervisor
forwards SIGTERM to every child, waits for them for `stop_timeout` seconds (shutdown_grace plus a margin:
each child lets its running jobs finish within shutdown_grace), kills the ones still running (their jobs
stay queued and run again elsewhere), and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

METRICS_PORT_ENV = "FACTSYNC_WORKER_METRICS_PORT"


@dataclass(frozen=True)
class Backoff:
    """How long to wait before restarting a child that died: ``first`` doubling up to ``longest``."""

    first: float = 1.0
    longest: float = 60.0
    # A child that lived this long was healthy: a crash after that is the first of a new series.
    stable_after: float = 60.0

    def delay(self, crashes_in_a_row: int) -> float:
        return min(self.longest, self.first * 2.0 ** max(0, crashes_in_a_row - 1))


class Supervisor:
    """Keeps ``processes`` children of ``command`` running until told to stop."""

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        stop_timeout: float,
        metrics_port: int = 0,
        backoff: Backoff | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.command = list(command)
        self.processes = processes
        self.stop_timeout = stop_timeout
        self.metrics_port = metrics_port
        self.backoff = backoff or Backoff()
        self.env = dict(os.environ if env is None else env)
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()

    def env_for(self, index: int) -> dict[str, str]:
        """A child's environment: each child gets its own metrics port, the base port plus its index."""
        env = dict(self.env)
        if self.metrics_port:
            env[METRICS_PORT_ENV] = str(self.metrics_port + index)
        return env

    def stop(self) -> None:
        if not self._stopping.is_set():
            log.info("supervisor.stopping", children=len(self.children), timeout_s=self.stop_timeout)
        self._stopping.set()

    async def run(self) -> int:
        """Run until SIGTERM or SIGINT (or `stop()`), then stop the children; returns the exit code, 0."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        log.info("supervisor.started", processes=self.processes, pid=os.getpid())
        try:
            await asyncio.gather(*(self._keep(index) for index in range(self.processes)))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("supervisor.stopped")
        return 0

    async def _keep(self, index: int) -> None:
        """Keep child ``index`` running; once stopping, stop it and return."""
        crashes = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            child = await asyncio.create_subprocess_exec(
                *self.command, env=self.env_for(index), stdin=asyncio.subprocess.DEVNULL
            )
            self.children[index] = child
            log.info("supervisor.child_started", index=index, pid=child.pid)
            exited = asyncio.ensure_future(child.wait())
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if self._stopping.is_set():
                await self._stop_child(index, child)
                return
            lived = time.monotonic() - started
            crashes = 1 if lived >= self.backoff.stable_after else crashes + 1
            delay = self.backoff.delay(crashes)
            log.error(
                "supervisor.child_exited",
                index=index,
                pid=child.pid,
                code=child.returncode,
                lived_s=round(lived, 1),
                restart_in_s=delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _stop_child(self, index: int, child: asyncio.subprocess.Process) -> None:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), self.stop_timeout)
        except TimeoutError:
            # Its running jobs are lost to it, not to factsync: arq runs them again once their
            # in-progress key expires.
            log.error("supervisor.child_killed", index=index, pid=child.pid, after_s=self.stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
        log.info("supervisor.child_stopped", index=index, pid=child.pid, code=child.returncode)
