"""Runs the listener and/or the arq worker in one event loop, with the embedded Redis when none is set."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog
from aiohttp import web
from redis.asyncio import Redis

from worker.aio import RECANCEL_AFTER, cancelled, ended
from worker.config import Settings
from worker.embedded_redis import EmbeddedRedis
from worker.handover import hand_over_dead, handed_over
from worker.heartbeat import beat, keep_beating, new_worker_id
from worker.jobs import worker_settings
from worker.metrics import start_worker_metrics
from worker.queue import Worker  # arq's, riding out a lost connection
from worker.redisio import connect

log = structlog.get_logger(__name__)

# What makes the listener's application: `worker.web.app.create_app`, handed in by the entry point (the core
# does not import the web front door).
AppFactory = Callable[[Settings, str], web.Application]


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[str]:
    """The configured Redis URL, or an embedded server's for as long as the block runs."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with EmbeddedRedis(settings.data_dir / "redis") as server:
        log.info("redis.embedded", url=server.url, data_dir=str(server.data_dir))
        yield server.url


@dataclass
class Running:
    listener_url: str | None
    runner: web.AppRunner | None
    worker: Worker | None
    worker_task: asyncio.Task[None] | None
    worker_id: str | None = None
    heartbeat: asyncio.Task[None] | None = None
    redis: Redis | None = None
    # A worker without a listener in its process serves its metrics on its own port (worker_metrics_port).
    metrics: web.AppRunner | None = None
    # How long running jobs may take to finish once the worker is told to stop (shutdown_grace).
    grace: float = 20.0

    async def stop(self) -> None:
        """Graceful: stop taking hooks, let running jobs finish within the grace period, then close."""
        try:
            await self._stop_work()
        finally:
            # Whatever went wrong above: a stopped worker takes its heartbeat down, or it would be handed over
            # as a dead one.
            if self.heartbeat is not None:
                await cancelled(self.heartbeat)
            if self.redis is not None:
                await self.redis.aclose()
            if self.metrics is not None:
                await self.metrics.cleanup()

    async def _stop_work(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.worker is not None and self.worker_task is not None:
            self.worker.handle_sig_wait_for_completion(signal.SIGTERM)
            # arq cancels its poll loop once the running jobs are done or the grace period is over; should
            # that cancellation be lost (worker.aio), this cancels it again rather than wait forever.
            await ended(self.worker_task, within=self.grace + RECANCEL_AFTER)
            # The jobs still running after the grace period were cancelled, and are unwinding: giving their
            # document's lease back, putting the job back in the queue. Let them finish that first, since
            # close() cancels whatever is not done once more, which would cut the unwinding short and leave
            # the lease to expire (lease_seconds) before another worker could take the job.
            unwinding = [task for task in self.worker.tasks.values() if not task.done()]
            if unwinding:
                await asyncio.wait(unwinding, timeout=10)
            await asyncio.gather(*(cancelled(task) for task in self.worker.tasks.values()))
            await self.worker.close()


async def start(
    settings: Settings, redis_url: str, *, app: AppFactory | None = None, work: bool = True
) -> Running:
    """Start a listener (when given its ``app`` factory) and/or a worker in this event loop."""
    listen = app is not None
    runner = None
    url = None
    if app is not None:
        runner = web.AppRunner(app(settings, redis_url), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.listen_host, settings.listen_port)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        log.info("listener.started", url=url)
    worker = None
    task = None
    if work:
        # First, so a metrics port already taken stops start-up before any job is taken. With a listener in
        # this process, its /metrics already shows this worker's counters.
        metrics = None if listen else await start_worker_metrics(settings)
        worker_id = new_worker_id()
        worker = Worker(**worker_settings(settings, redis_url, worker_id), handle_signals=False)
        redis = connect(redis_url, retry_for=settings.redis_reconnect_seconds)
        # Registered before it takes a job: a worker that dies at any moment after has a beat to be judged
        # by, so what it started is handed on.
        await beat(redis, worker_id, worker, time.time(), every=settings.heartbeat_seconds)
        # arq's graceful shutdown cancels `main_task` once running jobs are done; it must be this task.
        task = worker.main_task = asyncio.create_task(worker.main())
        heartbeat = asyncio.create_task(
            keep_beating(
                redis,
                worker_id,
                worker,
                every=settings.heartbeat_seconds,
                after_beat=functools.partial(
                    hand_over_dead,
                    redis,
                    worker_id,
                    in_progress_ms=int(worker.in_progress_timeout_s * 1000),
                ),
                stop_when=functools.partial(handed_over, redis, worker_id),
            )
        )
        log.info("worker.started", queue=worker.queue_name, max_jobs=settings.max_jobs, worker_id=worker_id)
        grace = settings.shutdown_grace
        return Running(url, runner, worker, task, worker_id, heartbeat, redis, metrics, grace)
    return Running(url, runner, worker, task)


async def serve(
    settings: Settings, redis_url: str, *, app: AppFactory | None = None, work: bool = True
) -> bool:
    """Run until SIGTERM or SIGINT, then stop gracefully. False when the worker stopped because the other
    workers judged it dead and handed its jobs on: its process should exit with an error, to be restarted."""
    # Before start-up: a SIGTERM while it starts (a supervisor stopping) must still stop it gracefully, and
    # take down the heartbeat it registers before it takes a job.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start(settings, redis_url, app=app, work=work)
    waiters = [asyncio.create_task(stop.wait())]
    if running.worker_task is not None:
        waiters.append(running.worker_task)  # type: ignore[arg-type]
    if running.heartbeat is not None:
        # It ends when live workers handed this one's jobs on (it was judged dead): stop, and let the
        # supervisor start a fresh process.
        waiters.append(running.heartbeat)  # type: ignore[arg-type]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    waiters[0].cancel()  # the signal's waiter, when something else ended first
    judged_dead = running.heartbeat is not None and running.heartbeat.done() and not stop.is_set()
    log.info("shutdown.begin", grace_s=settings.shutdown_grace)
    await running.stop()
    log.info("shutdown.done")
    return not judged_dead
