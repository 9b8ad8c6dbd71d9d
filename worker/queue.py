"""The arq queue as factsync uses it: job ids derived from events and documents, JSON job bodies.

Jobs are written by Lua scripts (so recording an event and queueing its job is one atomic step), in the
exact format arq's worker reads; `serialize_job` is arq's own.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from arq.jobs import serialize_job

FAN_OUT = "fan_out"
SYNC = "sync_document"


def job_serializer(obj: Any) -> bytes:
    # JSON rather than arq's default pickle: jobs stay readable to operators and carry only ids.
    return json.dumps(obj, separators=(",", ":")).encode()


def job_deserializer(data: bytes) -> Any:
    return json.loads(data)


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
