"""The aiohttp app: each administration's API v2 endpoint, fault injection and the /_sim control routes."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tasks.protocol import decode_form
from tasks.simulator.administration import SimAdministration
from tasks.simulator.calls import CallRecord, redact
from tasks.simulator.dispatch import ACTIONS, LOCK_FREE_CONTROLLERS, is_write
from tasks.simulator.envelope import (
    CONCURRENT_CALLS,
    UNROUTED,
    ApiFailure,
    EmptyAnswer,
    dumps,
    error_body,
    success_body,
)
from tasks.simulator.faults import FaultRule
from tasks.simulator.language import Language, language_of, translate_all
from tasks.simulator.params import Params
from tasks.simulator.render import invoice_show

ADMINS = web.AppKey("admins", dict[str, SimAdministration])
STOPPING = web.AppKey("stopping", asyncio.Event)

_HTML_PAGES = {
    500: "<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1>"
    "<p>The server encountered an internal error or misconfiguration and was unable to complete your "
    "request.</p>"
    "<hr><address>Apache Server</address></body></html>",
    502: "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
    "<hr><center>nginx</center></body></html>",
    503: "<html><head><title>503 Service Temporarily Unavailable</title></head><body><center>"
    "<h1>503 Service Temporarily Unavailable</h1></center><hr><center>nginx</center></body></html>",
}
_PHP_ERROR_PAGE = (
    "<br />\n<b>Fatal error</b>:  Uncaught PDOException: SQLSTATE[HY000] [2002] Connection refused in "
    "/var/www/hostfact/Pro/class/database.php:41\nStack trace:\n#0 {main}\n  thrown in "
    "<b>/var/www/hostfact/Pro/class/database.php</b> on line <b>41</b><br />\n"
)


def _ban_page(ip: str) -> str:
    return (
        "<html><head><title>403 Forbidden</title></head><body><h1>Access denied</h1>"
        f"<p>Your IP address {ip} is currently in firewall because of too many requests. "
        "Please try again later.</p></body></html>"
    )


def create_app(admins: Iterable[SimAdministration]) -> web.Application:
    """An application serving each administration at ``/{name}/api/v2/`` and its ``/{name}/_sim/`` routes."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    by_name: dict[str, SimAdministration] = {}
    for admin in admins:
        if admin.name in by_name:
            raise ValueError(f"two administrations named {admin.name!r}")
        by_name[admin.name] = admin
    app[ADMINS] = by_name
    app[STOPPING] = asyncio.Event()

    app.router.add_get("/", _index)
    for path in ("/{admin}/api/v2/", "/{admin}/api/v2", "/{admin}/Pro/apiv2/api.php"):
        app.router.add_route("*", path, _api)
    app.router.add_get("/{admin}/_sim/faults", _faults_get)
    app.router.add_post("/{admin}/_sim/faults", _faults_post)
    app.router.add_delete("/{admin}/_sim/faults", _faults_delete)
    app.router.add_get("/{admin}/_sim/state", _state)
    app.router.add_get("/{admin}/_sim/calls", _calls_get)
    app.router.add_delete("/{admin}/_sim/calls", _calls_delete)
    app.router.add_get("/{admin}/_sim/hooks", _hooks_get)
    app.router.add_post("/{admin}/_sim/hooks/drain", _hooks_drain)
    app.router.add_post("/{admin}/_sim/reset", _reset)
    app.router.add_post("/{admin}/_sim/credit-partly", _credit_partly)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


async def _on_shutdown(app: web.Application) -> None:
    # Wakes requests hanging in a "timeout" fault so the server can stop without waiting them out.
    app[STOPPING].set()


async def _on_cleanup(app: web.Application) -> None:
    for admin in app[ADMINS].values():
        await admin.hooks.close()


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json", headers=headers)


def _admin(request: web.Request) -> SimAdministration:
    admin = request.app[ADMINS].get(request.match_info["admin"])
    if admin is None:
        raise web.HTTPNotFound(
            text=dumps({"error": "unknown administration"}), content_type="application/json"
        )
    return admin


# -- the API endpoint ----------------------------------------------------------------------------------------


async def _read_params(request: web.Request) -> dict[str, Any]:
    """The body as PHP reads it: ``$_POST`` from a form, else ``json_decode(php://input)``, any type."""
    params: dict[str, Any] = {}
    if request.content_type == "multipart/form-data":
        form = await request.post()
        params = decode_form((key, str(value)) for key, value in form.items())
        return params
    raw = await request.read()
    if request.content_type == "application/x-www-form-urlencoded":
        params = decode_form(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    if not params and raw:
        try:
            # Amounts stay exact: JSON numbers become Decimals, never floats.
            decoded = json.loads(raw, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            decoded = None
        if isinstance(decoded, dict):
            params = decoded
    return params


def _ip_allowed(ip: str, allowed: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if address in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def _login(admin: SimAdministration, params: Params, remote: str) -> None:
    """HostFact's checkLogin order; every failure is answered before routing (controller "invalid")."""
    api_key = params.text("api_key")
    if api_key == "":
        raise ApiFailure("No api_key provided")
    if not admin.api_access_enabled:
        raise ApiFailure("API access has been disabled")
    if admin.allowed_ips is not None and not _ip_allowed(remote, admin.allowed_ips):
        raise ApiFailure(f"IP {remote} has no access to API")
    if api_key != admin.api_key:
        raise ApiFailure("API key is invalid")


async def _run(
    admin: SimAdministration,
    raw: dict[str, Any],
    controller: str,
    action: str,
    remote: str,
    call: CallRecord,
    language: Language,
) -> dict[str, Any]:
    """Log in, route, apply and fire hooks; the JSON body to answer with. EmptyAnswer passes through."""
    params = Params(raw)
    try:
        _login(admin, params, remote)
    except ApiFailure as failure:
        call.errors = failure.errors
        return error_body(UNROUTED, UNROUTED, failure.errors)
    locked = admin.dialect == "hostfact" and is_write(action) and controller not in LOCK_FREE_CONTROLLERS
    lock = admin.write_lock()
    if locked:
        try:
            await asyncio.wait_for(lock.acquire(), timeout=admin.concurrency_wait)
        except TimeoutError:
            call.errors = translate_all([CONCURRENT_CALLS], language, admin.dialect)
            return error_body(UNROUTED, UNROUTED, call.errors)
    try:
        if controller not in ACTIONS:
            call.errors = ["Invalid controller"]
            return error_body(UNROUTED, UNROUTED, call.errors)
        if action not in ACTIONS[controller]:
            call.errors = ["Invalid action"]
            return error_body(controller, UNROUTED, call.errors)
        try:
            outcome = admin.execute(controller, action, raw)
        except ApiFailure as failure:
            call.errors = translate_all(failure.errors, language, admin.dialect)
            return error_body(controller, action, call.errors)
        outcome.success = translate_all(outcome.success, language, admin.dialect)
        if outcome.warning:
            outcome.warning = translate_all(outcome.warning, language, admin.dialect)
        call.applied = outcome.changed
        body = success_body(controller, action, outcome)
        await admin.fire(outcome)
        return body
    finally:
        if locked:
            lock.release()


def _language(request: web.Request, admin: SimAdministration) -> Language:
    # HostFact reads it from the URL's query (Pro/config.php), never from the POST body.
    return language_of(admin.dialect, request.query.get("language"))


def _drop_connection(request: web.Request) -> web.Response:
    """Close the socket without an answer; the client sees a disconnect. The response is never sent."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=204)


async def _apply_fault(
    request: web.Request, admin: SimAdministration, rule: FaultRule, headers: dict[str, str], call: CallRecord
) -> web.StreamResponse:
    kind = rule.kind
    call.outcome = "fault"
    if kind in ("http_500", "http_502", "http_503"):
        status = int(kind[-3:])
        call.http_status = status
        return web.Response(
            text=_HTML_PAGES[status], status=status, content_type="text/html", headers=headers
        )
    if kind == "html":
        status = rule.status or 200
        call.http_status = status
        return web.Response(text=_PHP_ERROR_PAGE, status=status, content_type="text/html", headers=headers)
    if kind == "empty_body":
        call.http_status = 200
        return web.Response(body=b"", status=200, content_type="text/html", headers=headers)
    if kind == "ban_403":
        if rule.delay > 0:
            admin.firewall.ban(request.remote or "", rule.delay)
        call.http_status = 403
        return web.Response(
            text=_ban_page(request.remote or ""), status=403, content_type="text/html", headers=headers
        )
    if kind == "concurrent":
        call.http_status = 200
        call.errors = translate_all([CONCURRENT_CALLS], _language(request, admin), admin.dialect)
        return _json(error_body(UNROUTED, UNROUTED, call.errors), headers=headers)
    # timeout: hang past the client's patience, then drop the line; the call is not applied.
    try:
        await asyncio.wait_for(request.app[STOPPING].wait(), timeout=rule.delay)
    except TimeoutError:
        pass
    return _drop_connection(request)


async def _api(request: web.Request) -> web.StreamResponse:
    admin = _admin(request)
    remote = request.remote or ""
    started = time.monotonic()
    verdict = admin.firewall.admit(remote)
    raw = await _read_params(request) if request.method == "POST" else {}
    # HostFact reads only the POST body; a GET's query string is ignored, so it fails login.
    params = Params(raw)
    controller, action = params.text("controller").lower(), params.text("action").lower()
    call = CallRecord(len(admin.calls) + 1, controller, action, redact(raw), remote)
    admin.calls.append(call)
    try:
        if not verdict.allowed:
            call.outcome, call.http_status = "banned", 403
            return web.Response(
                text=_ban_page(remote), status=403, content_type="text/html", headers=verdict.headers
            )
        rule = admin.faults.pick(controller, action, is_write(action))
        if rule is not None:
            call.fault = rule.kind
            if rule.kind == "latency":
                await asyncio.sleep(rule.delay)
            elif rule.kind != "lost_answer":
                return await _apply_fault(request, admin, rule, verdict.headers, call)
        body: dict[str, Any] | None
        try:
            body = await _run(admin, raw, controller, action, remote, call, _language(request, admin))
            call.outcome = "success" if body["status"] == "success" else "error"
        except EmptyAnswer:
            body = None
            call.outcome = "empty"
        if rule is not None and rule.kind == "lost_answer":
            # The write is applied (and its hooks fired); only the answer is lost.
            return _drop_connection(request)
        call.http_status = 200
        if body is None:
            return web.Response(body=b"", status=200, content_type="text/html", headers=verdict.headers)
        return _json(body, headers=verdict.headers)
    finally:
        call.duration = time.monotonic() - started


# -- control routes ------------------------------------------------------------------------------------------


async def _index(request: web.Request) -> web.Response:
    base = f"{request.scheme}://{request.host}"
    return _json(
        {
            "administrations": [
                {
                    "name": admin.name,
                    "dialect": admin.dialect,
                    "api_url": f"{base}/{admin.name}/api/v2/",
                    "control": f"{base}/{admin.name}/_sim/",
                }
                for admin in request.app[ADMINS].values()
            ]
        }
    )


def _rules(admin: SimAdministration) -> web.Response:
    return _json({"rules": [rule.to_dict() for rule in admin.faults.rules]})


async def _faults_get(request: web.Request) -> web.Response:
    return _rules(_admin(request))


async def _faults_post(request: web.Request) -> web.Response:
    """Body: one rule ``{"kind": "http_503", "action": "partpayment", "times": 2}``, or a list of rules."""
    admin = _admin(request)
    try:
        data = await request.json()
        items = data.get("rules", [data]) if isinstance(data, dict) else data
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise ValueError("expected a rule object, a list of rules or {'rules': [...]}")
        rules = [FaultRule.from_dict(item) for item in items]
    except (ValueError, TypeError) as exc:
        return _json({"error": str(exc)}, status=400)
    for rule in rules:
        admin.faults.add(rule)
    return _rules(admin)


async def _faults_delete(request: web.Request) -> web.Response:
    admin = _admin(request)
    admin.faults.clear()
    return _rules(admin)


async def _credit_partly(request: web.Request) -> web.Response:
    """HostFact's back-office partial credit. Body ``{"Identifier": 1, "Lines": {"<line id>": <number>}}``;
    answers the new credit invoice after its hooks went out."""
    admin = _admin(request)
    try:
        data = await request.json()
        if not isinstance(data, dict) or not isinstance(data.get("Lines"), dict):
            raise ValueError('expected {"Identifier": <invoice id>, "Lines": {"<line id>": <number>}}')
        numbers = {int(line): number for line, number in data["Lines"].items()}
        credit = await admin.credit_partly(int(data["Identifier"]), numbers)
    except ApiFailure as failure:
        return _json({"error": "; ".join(failure.errors)}, status=400)
    except (ValueError, TypeError, KeyError) as exc:
        return _json({"error": str(exc)}, status=400)
    return _json({"invoice": invoice_show(admin.dialect, credit)})


async def _state(request: web.Request) -> web.Response:
    return _json(_admin(request).snapshot())


async def _calls_get(request: web.Request) -> web.Response:
    admin = _admin(request)
    controller, action = request.query.get("controller"), request.query.get("action")
    calls = [
        call.to_dict()
        for call in admin.calls
        if (controller is None or call.controller == controller) and (action is None or call.action == action)
    ]
    return _json({"count": len(calls), "calls": calls})


async def _calls_delete(request: web.Request) -> web.Response:
    admin = _admin(request)
    admin.calls.clear()
    return _json({"count": 0, "calls": []})


async def _hooks_get(request: web.Request) -> web.Response:
    admin = _admin(request)
    return _json({"count": len(admin.hooks_fired), "hooks": [hook.to_dict() for hook in admin.hooks_fired]})


async def _hooks_drain(request: web.Request) -> web.Response:
    admin = _admin(request)
    await admin.drain_hooks()
    return _json({"count": len(admin.hooks_fired), "hooks": [hook.to_dict() for hook in admin.hooks_fired]})


async def _reset(request: web.Request) -> web.Response:
    admin = _admin(request)
    await admin.drain_hooks()
    admin.reset()
    return _json({"reset": admin.name})
