"""The hook handler: verify, validate, record and queue each hook, and answer fast.

Nothing slow happens before the answer: one Redis script records the event and queues its fan-out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from tasks.hooks import read_hook
from worker.config import Settings
from worker.signing import SignatureError
from worker.web.appkeys import SETTINGS, STORE, VERIFIERS
from worker.web.metrics import count_hook

log = structlog.get_logger(__name__)


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


async def receive_hook(request: web.Request) -> web.Response:
    source = request.match_info["source"]
    known = source if source in request.app[VERIFIERS] else None
    try:
        response = await _receive_hook(request)
    except Exception:
        count_hook(known, None)
        raise
    count_hook(known, response)
    return response


async def _receive_hook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    source = request.match_info["source"]
    verifier = request.app[VERIFIERS].get(source)
    if verifier is None:
        return error(404, "unknown_source", f"no source named {source!r} is configured")
    if request.content_type != "application/json":
        return error(415, "unsupported_media_type", "send the hook as Content-Type: application/json")
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        return _too_large(settings)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _too_large(settings)
    try:
        webhook_id = verifier.verify(body, request.headers)
    except SignatureError as exc:
        log.info("hook.rejected", source=source, reason=str(exc))
        return error(401, "bad_signature", str(exc))
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        # RecursionError: nested deeper than Python's parser goes. No hooks.php sends such a body.
        return error(415, "not_json", "the body is not JSON (or nested too deeply to read)")
    # From here the hook is authentic: it is recorded whatever it holds (invariant 10). Without a usable
    # invoice id it goes to the failed store, with its body and the reason, for a person to see.
    record = _record_of(document, body)
    try:
        accepted = await request.app[STORE].accept(
            source=source,
            action=record.action,
            payload=record.payload,
            webhook_id=webhook_id,
            ignored_reason=record.ignored,
            failed_reason=record.failed,
            problems=record.problems,
        )
    except RedisError as exc:
        # Redis away (down, or no primary while a failover is under way), or full (maxmemory with
        # noeviction refuses writes): nothing was recorded. Or recorded but not yet on the replicas that
        # redis_wait_replicas asks for (NotReplicated). Either way not acknowledged: a 503 makes hooks.php
        # spool the hook, and resend.php delivers it later (a duplicate, 200, if it was kept after all).
        log.warning("hook.not_recorded", source=source, error=f"{type(exc).__name__}: {exc}"[:200])
        response = error(503, "unavailable", "the event store cannot take the hook now; send it again later")
        response.headers["Retry-After"] = "30"
        return response
    action = record.action
    if accepted.duplicate:
        log.info("hook.duplicate", source=source, action=action, event_id=accepted.event_id)
        return web.json_response(
            {"event_id": accepted.event_id, "status": accepted.status, "duplicate": True}, status=200
        )
    # DEBUG: one line per hook would cost a third of the listener's time; every hook is in the event store
    # and counted in /metrics anyway.
    log.debug(
        "hook.accepted", source=source, action=action, event_id=accepted.event_id, status=accepted.status
    )
    return web.json_response({"event_id": accepted.event_id, "status": accepted.status}, status=202)


@dataclass(frozen=True)
class _Record:
    """How an authentic hook is recorded: its payload, and the reason it is ignored or failed, if so."""

    action: str
    payload: dict[str, Any]
    ignored: str | None = None
    failed: str | None = None
    problems: tuple[str, ...] = ()


def _record_of(document: Any, body: bytes) -> _Record:
    action, data, broken = _hook_shape(document)
    if broken is not None:
        # The body as text: it is what a person needs to see, whatever shape it has.
        text = {"body": body.decode("utf-8", "replace")}
        return _Record(action or "(none)", text, failed=f"the hook names no invoice: {broken}")
    reading = read_hook(action, data)
    if reading is None:
        return _Record(action, data, ignored=f"factsync does not act on {action!r}")
    if reading.unusable is not None:
        failed = f"the hook names no usable invoice: {reading.unusable}"
        return _Record(action, data, failed=failed, problems=reading.problems)
    # As it came when a field did not parse (for a person to read), else normalised.
    return _Record(action, data if reading.problems else reading.payload, problems=reading.problems)


def _hook_shape(document: Any) -> tuple[str, dict[str, Any], str | None]:
    """(action, data, None) for a body of hooks.php's shape, else what is wrong with it."""
    if not isinstance(document, dict):
        return "", {}, "the body is not a JSON object"
    action, data = document.get("action"), document.get("data")
    if not isinstance(action, str) or not action:
        return "", {}, "'action' is not a non-empty string"
    if not isinstance(data, dict):
        return action, {}, "'data' is not an object with the hook's params"
    return action, data, None


def _too_large(settings: Settings) -> web.Response:
    return error(413, "too_large", f"the body is larger than {settings.max_body_bytes} bytes")
