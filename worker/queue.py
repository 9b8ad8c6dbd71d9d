"""The arq queue as factsync uses it: job ids derived from events and documents, JSON job bodies.

Jobs are written by Lua scripts (so recording an event and queueing its job is one atomic step), in the
exact format arq's worker reads; `serialize_job` is arq's own.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import arq.worker
from arq.connections import ArqRedis
from arq.jobs import SerializationError, deserialize_job_raw, serialize_job
from redis.exceptions import WatchError

from worker import keys, redisio

FAN_OUT = "fan_out"
SYNC = "sync_document"


def job_serializer(obj: Any) -> bytes:
    # JSON rather than arq's default pickle: jobs stay readable to operators and carry only ids.
    return json.dumps(obj, separators=(",", ":")).encode()


def job_deserializer(data: bytes) -> Any:
    return json.loads(data)


def arq_redis(redis_url: str, *, retry_for: float) -> ArqRedis:
    """The worker's client for arq, made by worker.redisio like every other.

    Not arq's RedisSettings: for a Sentinel group it reaches the sentinels without TLS or a password, and
    a lost connection ends arq's poll loop (and the worker process); this client waits out a failover.
    """
    pool = redisio.connect(redis_url, retry_for=retry_for, client_class=ArqRedis)
    pool.job_serializer = job_serializer
    pool.job_deserializer = job_deserializer
    pool.default_queue_name = keys.QUEUE
    return pool


class Worker(arq.worker.Worker):
    """arq's worker, riding out a connection lost while it picks up a job."""

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        try:
            await super().start_jobs(job_ids)
        except WatchError:
            # A connection lost while arq watched a job's in-progress key (redis-py raises WatchError
            # then), after arq took a slot for the job and before it caught anything: give the slot back.
            # The job stays queued and is picked up at a next poll; uncaught, this ends the worker.
            self.job_counter -= 1
            self.sem.release()


def now_ms() -> int:
    return int(time.time() * 1000)


def fan_out_job_id(event_id: str, generation: int) -> str:
    """One fan-out per event and generation: only a deliberate re-enqueue (generation + 1) runs it again."""
    return f"fanout:{event_id}:{generation}"


def sync_job_id(route: str, document: str) -> str:
    """Unique per scheduling; the `scheduled` flag, not the id, is what coalesces syncs of a document."""
    return f"sync:{route}:{document}:{uuid.uuid4().hex[:12]}"


def job_body(function: str, args: tuple[Any, ...], enqueue_time_ms: int) -> bytes:
    return bytes(serialize_job(function, args, {}, None, enqueue_time_ms, serializer=job_serializer))


def sync_document_of(body: bytes | None) -> tuple[str, str] | None:
    """(route, document) of a sync job's body; None for another job, or a body gone or unreadable."""
    if not body:
        return None
    try:
        function, args, *_ = deserialize_job_raw(body, deserializer=job_deserializer)
    except SerializationError:
        return None
    if function != SYNC or len(args) != 2:
        return None
    return str(args[0]), str(args[1])
