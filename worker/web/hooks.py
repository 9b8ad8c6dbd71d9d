"""The hook handler: verify, validate, record and queue each hook, and answer fast.

Nothing slow happens before the answer: one Redis script records the event and queues its fan-out.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from tasks.hooks import parse_hook
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
    except ValueError:
        return error(415, "not_json", "the body is not JSON")
    if not isinstance(document, dict):
        return error(422, "invalid", "the body must be a JSON object", field="(body)")
    action = document.get("action")
    data = document.get("data")
    if not isinstance(action, str) or not action:
        return error(422, "invalid", "'action' must be a non-empty string", field="action")
    if not isinstance(data, dict):
        return error(422, "invalid", "'data' must be an object with the hook's params", field="data")
    try:
        hook = parse_hook(action, data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "data." + ".".join(str(part) for part in first["loc"])
        problems = [
            {"field": "data." + ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        return error(422, "invalid", f"{field}: {first['msg']}", field=field, problems=problems)
    payload = hook.model_dump(mode="json") if hook else data
    ignored = None if hook else f"factsync does not act on {action!r}"
    accepted = await request.app[STORE].accept(
        source=source, action=action, payload=payload, webhook_id=webhook_id, ignored_reason=ignored
    )
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


def _too_large(settings: Settings) -> web.Response:
    return error(413, "too_large", f"the body is larger than {settings.max_body_bytes} bytes")
