"""The operators' web dashboard under /dashboard (aiohttp + jinja2); off unless credentials are configured.

What it shows: queue depths, the last hour's throughput and failure rate, the failed store with retry buttons,
each event in full (payload, outcome per route, API calls, tries, history) and the workers' heartbeats.

Security, in short:
- Mounted only when `[dashboard]` has a token or a username and password; otherwise /dashboard is a 404.
- Token: `Authorization: Bearer <token>`, or the login form, which sets a session cookie (HttpOnly,
  SameSite=Strict) signed with a key derived by HMAC from the token, so rotating the token ends every session.
  Username and password: HTTP basic auth with the standard 401 challenge on every request.
- Every POST carries a per-session CSRF token (an HMAC of the session id) in a hidden field; a missing or
  wrong one is a 403. A session id lives in the signed cookie, which basic-auth browsers get too.
- jinja2 autoescapes everything; every value shown is scrubbed of the configured secrets and of fields named
  like secrets first, and the rendered page once more, so a secret that slipped into an event is not shown.
- No JavaScript at all: the Content-Security-Policy allows none.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from markupsafe import escape
from redis.asyncio import Redis

from tasks.redact import REDACTED, Redactor
from worker import keys, operate
from worker.config import DashboardSettings, Settings
from worker.heartbeat import stale_after
from worker.store import FAILURE_BUCKET, STATUSES, Event, EventStore
from worker.web.appkeys import REDIS, STORE

PREFIX = "/dashboard"
COOKIE = "factsync_dashboard"
# A browser session lasts a working day; the cookie says when it ends, and the signature covers that.
SESSION_SECONDS = 12 * 3600
# The activity chart: the last hour in 5-minute buckets.
BUCKET_SECONDS = FAILURE_BUCKET  # the failure counters' buckets
BUCKETS = 12
# Event ids as EventStore makes them; anything else in a URL is a 404 before Redis is asked.
EVENT_ID = r"evt_[0-9a-f]{1,64}"
PAGE_SIZE = 100

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_dashboard(app: web.Application, settings: Settings) -> None:
    """Mount the dashboard on the listener's application when credentials are configured."""
    if not settings.dashboard.enabled:
        return
    dashboard = web.Application(middlewares=[security_headers, guard])
    dashboard[AUTH] = Guard(settings.dashboard)
    dashboard[THROTTLE] = SignInThrottle(limit=settings.dashboard.sign_in_limit)
    dashboard[SCRUB] = Scrubber(settings.secrets())
    dashboard[SETTINGS] = settings
    dashboard[TEMPLATES] = templates()
    event = "/events/{event_id:" + EVENT_ID + "}"
    dashboard.router.add_get("", overview, name="overview")
    dashboard.router.add_get("/", overview)
    dashboard.router.add_get("/login", login_form, name="login_form")
    dashboard.router.add_post("/login", login, name="login")
    dashboard.router.add_post("/logout", logout)
    dashboard.router.add_get("/failed", failed_page)
    dashboard.router.add_post("/failed/retry", retry_many)
    dashboard.router.add_post("/failed/retry-matching", retry_matching)
    dashboard.router.add_get("/events", events_page)
    dashboard.router.add_get(event, event_page)
    dashboard.router.add_post(event + "/retry", retry_one)
    dashboard.router.add_post(event + "/discard", discard_one)
    app.add_subapp(PREFIX, dashboard)


def templates() -> jinja2.Environment:
    """The page templates, shipped as package data in worker/web/templates/dashboard."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("worker.web", "templates/dashboard"),
        autoescape=True,  # every page is HTML: escape everything, not only *.html by name
        undefined=jinja2.StrictUndefined,  # a typo in a template is an error in the tests, not a blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["pretty"] = _pretty
    return env


# --- authentication and CSRF ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """Who is looking, and their session: the id the CSRF token is bound to."""

    who: str
    session: str
    # True when this request started the session: the response sets the cookie.
    new_session: bool
    expires: int


class Guard:
    """Checks credentials, signs session cookies and derives CSRF tokens from the configured secrets."""

    def __init__(self, config: DashboardSettings) -> None:
        self.token = config.token.get_secret_value() if config.token else None
        self.username = config.username if config.password is not None else None
        self.password = config.password.get_secret_value() if config.password else None
        material = "\0".join(part or "" for part in (self.token, self.username, self.password))
        # The signing key is an HMAC of the credentials: change any of them and every cookie and CSRF token
        # issued before is void. The credentials themselves never leave the process.
        self.key = hmac.new(material.encode(), b"factsync dashboard session v1", hashlib.sha256).digest()

    @property
    def uses_token(self) -> bool:
        return self.token is not None

    @property
    def uses_basic(self) -> bool:
        return self.username is not None and self.password is not None

    def token_matches(self, offered: str) -> bool:
        return self.token is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def identify(self, request: web.Request) -> Viewer | None:
        """The viewer behind the request's credentials, or None when there are none or they are wrong."""
        session = self.read_cookie(request.cookies.get(COOKIE, ""))
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        who: str | None = None
        if header:
            # Credentials that were offered and are wrong are refused, even next to a valid cookie.
            if scheme.lower() == "bearer" and self.token_matches(credentials.strip()):
                who = "token"
            elif scheme.lower() == "basic":
                who = self._basic(credentials.strip())
            if who is None:
                return None
        elif session is not None and self.uses_token:
            # A cookie signs someone in only where the token is configured (the login form's purpose); with
            # basic auth alone the browser sends the password with every request and the cookie only
            # carries the CSRF session.
            who = session[2]
        if who is None:
            return None
        if session is None:
            return self.new_viewer(who)
        sid, expires, _ = session
        return Viewer(who=who, session=sid, new_session=False, expires=expires)

    def new_viewer(self, who: str) -> Viewer:
        return Viewer(
            who=who,
            session=secrets.token_urlsafe(18),
            new_session=True,
            expires=int(time.time()) + SESSION_SECONDS,
        )

    def _basic(self, credentials: str) -> str | None:
        if not self.uses_basic:
            return None
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        assert self.username is not None and self.password is not None
        # Both compared in full, always, so the timing does not tell which one was wrong.
        user_ok = hmac.compare_digest(username.encode(), self.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return username if sep and user_ok and password_ok else None

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self.key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()

    def cookie_value(self, viewer: Viewer) -> str:
        """`session id.expiry.who.signature`: who signed in rides along for the events' history."""
        who = base64.urlsafe_b64encode(viewer.who.encode()).decode().rstrip("=")
        body = f"{viewer.session}.{viewer.expires}.{who}"
        return f"{body}.{self._mac('session', body)}"

    def read_cookie(self, value: str) -> tuple[str, int, str] | None:
        """(session id, expiry, who) from a cookie this dashboard signed and that has not expired."""
        parts = value.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        sid, expires, who, signature = parts
        if not hmac.compare_digest(
            signature.encode(), self._mac("session", f"{sid}.{expires}.{who}").encode()
        ):
            return None
        if int(expires) < time.time():
            return None
        try:
            name = base64.urlsafe_b64decode(who + "=" * (-len(who) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return sid, int(expires), name

    def csrf(self, viewer: Viewer) -> str:
        """The session's CSRF token: only someone holding the session cookie's id can know it."""
        return self._mac("csrf", viewer.session)

    def csrf_matches(self, viewer: Viewer, offered: str) -> bool:
        return hmac.compare_digest(offered.encode(), self.csrf(viewer).encode())

    def challenge(self) -> list[str]:
        realm = 'realm="factsync dashboard"'
        found = []
        if self.uses_basic:
            found.append(f'Basic {realm}, charset="UTF-8"')
        if self.uses_token:
            found.append(f"Bearer {realm}")
        return found


class SignInThrottle:
    """Wrong credentials per client address: after ``limit`` within ``window`` seconds, that client is refused
    (429) until the window has passed since its first wrong try, right credentials included. Per listener
    process; behind a proxy every client shares the proxy's address."""

    def __init__(self, limit: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, list[float]] = {}

    def _recent(self, client: str) -> list[float]:
        cutoff = self.clock() - self.window
        recent = [at for at in self._failures.get(client, []) if at > cutoff]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return recent

    def wait(self, client: str) -> float:
        """Seconds this client must wait before it may try again; 0 when it may."""
        recent = self._recent(client)
        if len(recent) < self.limit:
            return 0.0
        return max(0.0, recent[0] + self.window - self.clock())

    def failed(self, client: str) -> None:
        self._failures.setdefault(client, []).append(self.clock())


AUTH = web.AppKey("dashboard_auth", Guard)
THROTTLE = web.AppKey("dashboard_sign_in_throttle", SignInThrottle)
VIEWER = web.RequestKey("dashboard_viewer", Viewer)


def set_session_cookie(request: web.Request, response: web.StreamResponse, viewer: Viewer) -> None:
    response.set_cookie(
        COOKIE,
        request.app[AUTH].cookie_value(viewer),
        max_age=SESSION_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="Strict",
        # Secure whenever the dashboard is reached over TLS; over plain HTTP (localhost) it could not be set.
        secure=request.secure,
    )


# Routes anyone may reach: the login form and its POST (which checks the token itself).
PUBLIC_ROUTES = frozenset({"login_form", "login"})


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every request, and check the CSRF token of every POST, before any handler runs."""
    auth = request.app[AUTH]
    client = request.remote or ""
    tries = "Authorization" in request.headers or request.match_info.route.name == "login"
    if tries:
        wait = request.app[THROTTLE].wait(client)
        if wait > 0:
            return too_many_tries(request, wait)
    viewer = auth.identify(request)
    if viewer is None and "Authorization" in request.headers:
        request.app[THROTTLE].failed(client)
    if request.match_info.route.name in PUBLIC_ROUTES:
        if viewer is not None:
            request[VIEWER] = viewer
        return await handler(request)
    if viewer is None:
        return unauthorized(request)
    request[VIEWER] = viewer
    if request.method == "POST":
        form = await request.post()
        offered = form.get("csrf")
        # A session begun by this very request has never shown a form, so no CSRF token can match it.
        if viewer.new_session or not isinstance(offered, str) or not auth.csrf_matches(viewer, offered):
            return render(request, "error.html", status=403, title="Forbidden", message=_CSRF_MESSAGE)
    response = await handler(request)
    if viewer.new_session:
        set_session_cookie(request, response, viewer)
    return response


_CSRF_MESSAGE = (
    "The form's security token is missing or does not match your session. Reload the page and try again."
)

# No script may run, nothing may frame the dashboard, forms post only to it; styles are inline.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Pages show payloads and failures: no shared cache or browser history cache should keep them.
    "Cache-Control": "no-store",
}


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.update(_SECURITY_HEADERS)
    return response


def too_many_tries(request: web.Request, wait: float) -> web.Response:
    seconds = max(1, round(wait))
    response = render(
        request,
        "error.html",
        status=429,
        title="Too many tries",
        message=f"Too many wrong sign-ins from your address: try again in {seconds} s.",
    )
    response.headers["Retry-After"] = str(seconds)
    return response


def unauthorized(request: web.Request, message: str = "") -> web.Response:
    auth = request.app[AUTH]
    response = render(
        request, "login.html", status=401, title="Sign in", message=message, token_login=auth.uses_token
    )
    for challenge in auth.challenge():
        response.headers.add("WWW-Authenticate", challenge)
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    if request.get(VIEWER) is not None:
        return redirect(PREFIX)
    if not request.app[AUTH].uses_token:
        return unauthorized(request)
    return render(request, "login.html", title="Sign in", message="", token_login=True)


async def login(request: web.Request) -> web.StreamResponse:
    """The token from the form, once, for a signed session cookie."""
    auth = request.app[AUTH]
    form = await request.post()
    offered = form.get("token")
    if not auth.uses_token or not isinstance(offered, str) or not auth.token_matches(offered.strip()):
        request.app[THROTTLE].failed(request.remote or "")
        return unauthorized(request, "That token is not the dashboard's token.")
    # Always a fresh session id at sign-in, so a session id planted before it is worth nothing.
    viewer = auth.new_viewer("token")
    response = redirect(PREFIX)
    set_session_cookie(request, response, viewer)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = redirect(PREFIX + "/login")
    response.del_cookie(COOKIE, path=PREFIX)
    return response


def redirect(location: str) -> web.Response:
    # 303: after a POST the browser GETs the page, so a reload does not post the form again.
    return web.Response(status=303, headers={"Location": location})


# --- never a secret on a page ---------------------------------------------------------------------------


class Scrubber(Redactor):
    """Blanks the configured secrets, and every field named like a secret, wherever a page shows them."""

    def page(self, html: str) -> str:
        """The last line of defence, on the rendered page: a secret as is and as HTML-escaped."""
        for secret in self.values:
            # A short value (a weak password) matches ordinary words; the data was scrubbed of it already.
            if len(secret) >= 8:
                html = html.replace(secret, REDACTED).replace(str(escape(secret)), REDACTED)
        return html


SCRUB = web.AppKey("dashboard_scrubber", Scrubber)
TEMPLATES = web.AppKey("dashboard_templates", jinja2.Environment)
SETTINGS = web.AppKey("dashboard_settings", Settings)


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    viewer: Viewer | None = request.get(VIEWER)
    auth = request.app[AUTH]
    page = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            base=PREFIX,
            viewer=viewer,
            csrf=auth.csrf(viewer) if viewer else "",
            can_logout=viewer is not None and auth.uses_token and not request.headers.get("Authorization"),
            now=time.time(),
            path=request.path,
            **({"refresh": 0} | context),
        )
    )
    return web.Response(
        text=request.app[SCRUB].page(page), status=status, content_type="text/html", charset="utf-8"
    )


# --- queries: the seam to the shared operator API --------------------------------------------------------


def _store(request: web.Request) -> EventStore:
    # The listener owns Redis and the store (opened in its cleanup context).
    return request.config_dict[STORE]


def _redis(request: web.Request) -> Redis:
    return request.config_dict[REDIS]


async def failed_events(store: EventStore, *, limit: int = PAGE_SIZE) -> list[tuple[Event, float | None]]:
    """The failed store, newest first (the shared query), with when each event failed."""
    events = await operate.list_events(store, operate.EventFilter(status="failed"), limit=limit)
    # The failed index is scored by when each event entered it (microseconds).
    async with store.redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.zscore(keys.by_status("failed"), event.id)
        scores = await pipe.execute() if events else []
    return [(e, s / 1_000_000 if s is not None else None) for e, s in zip(events, scores, strict=True)]


# --- the overview: queue depths, the last hour, workers ---------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    start: float
    received: int
    done: int
    ignored: int
    failed: int

    @property
    def settled(self) -> int:
        return self.done + self.ignored + self.failed


async def activity(redis: Redis, now: float) -> list[Bucket]:
    """Events per 5-minute bucket over the last hour: received, and settled by the status they settled in.

    Received, done and ignored come from the indexes the store keeps anyway: `keys.EVENTS` is scored by
    arrival, and each status index by when the event entered that status, both in microseconds. Failures
    come from the store's counters (`keys.failures`), counted when they happened: an event failed and then
    retried still counts as a failure of its five minutes.
    """
    first = (int(now) // BUCKET_SECONDS - (BUCKETS - 1)) * BUCKET_SECONDS
    starts = [first + i * BUCKET_SECONDS for i in range(BUCKETS)]
    indexes = [keys.EVENTS, keys.by_status("done"), keys.by_status("ignored")]
    async with redis.pipeline(transaction=False) as pipe:
        for start in starts:
            for index in indexes:
                # ZCOUNT is O(log n) per bucket: cheap however many events the hour had.
                pipe.zcount(index, start * 1_000_000, f"({(start + BUCKET_SECONDS) * 1_000_000}")
            pipe.get(keys.failures(start))
        counts = [int(c or 0) for c in await pipe.execute()]
    return [Bucket(float(start), *counts[i * 4 : i * 4 + 4]) for i, start in enumerate(starts)]


@dataclass(frozen=True)
class Bar:
    """One stacked bar of the chart, with its geometry computed here so the template only places it."""

    x: float
    label: str
    title: str
    segments: list[tuple[str, float, float]]  # (status, y, height)
    received_y: float | None


CHART_WIDTH = 600
CHART_HEIGHT = 140
BAR_GAP = 6


def chart(buckets: list[Bucket]) -> list[Bar]:
    top = max([b.settled for b in buckets] + [b.received for b in buckets] + [1])
    slot = CHART_WIDTH / len(buckets)
    bars = []
    for i, bucket in enumerate(buckets):
        y = float(CHART_HEIGHT)
        segments = []
        for status, count in (("done", bucket.done), ("ignored", bucket.ignored), ("failed", bucket.failed)):
            height = CHART_HEIGHT * count / top
            y -= height
            segments.append((status, round(y, 1), round(height, 1)))
        label = datetime.fromtimestamp(bucket.start, UTC).strftime("%H:%M")
        title = (
            f"{label} UTC: {bucket.received} received, {bucket.done} done, "
            f"{bucket.ignored} ignored, {bucket.failed} failed"
        )
        received_y = round(CHART_HEIGHT * (1 - bucket.received / top), 1) if bucket.received else None
        bars.append(Bar(round(i * slot + BAR_GAP / 2, 1), label, title, segments, received_y))
    return bars


async def overview(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    redis = _redis(request)
    # The same summary as `factsync status`: queue depth, events per status, workers, API budgets.
    report = await operate.status_report(redis)
    buckets = await activity(redis, time.time())
    settled = sum(b.settled for b in buckets)
    failed = sum(b.failed for b in buckets)
    return render(
        request,
        "overview.html",
        title="Overview",
        refresh=_refresh(request),
        report=report,
        ready=report.queued_jobs - report.deferred_jobs,
        buckets=buckets,
        bars=chart(buckets),
        chart_width=CHART_WIDTH,
        chart_height=CHART_HEIGHT,
        bar_width=CHART_WIDTH / BUCKETS - BAR_GAP,
        received=sum(b.received for b in buckets),
        settled=settled,
        failed_hour=failed,
        failure_rate=(100 * failed / settled) if settled else None,
        stale_after=stale_after(request.app[SETTINGS].heartbeat_seconds),
        recent_failed=[_row(request, e, at) for e, at in await failed_events(store, limit=5)],
    )


# --- failed events, event lists and detail ---------------------------------------------------------------


def _row(request: web.Request, event: Event, at: float | None = None) -> dict[str, Any]:
    """An event as the templates see it: a plain dict, scrubbed of secrets."""
    data = asdict(event)
    data["at"] = at
    # Waiting is not running: a retry's backoff or a ban pause holds it, no worker works on it.
    data["shown_status"] = "waiting" if event.waiting(time.time()) else event.status
    data["invoice"] = str(event.payload.get("InvoiceCode") or event.payload.get("id") or "")
    return cast(dict[str, Any], request.app[SCRUB].value(data))


def _count(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


async def failed_page(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    rows = [_row(request, event, at) for event, at in await failed_events(store, limit=PAGE_SIZE)]
    return render(
        request,
        "failed.html",
        title="Failed events",
        rows=rows,
        total=await store.count("failed"),
        retried=_count(request.query.get("retried")),
        refused=_count(request.query.get("refused")),
        bad_since=bool(request.query.get("bad_since")),
        refresh=_refresh(request),
    )


async def retry_many(request: web.Request) -> web.StreamResponse:
    """Retry the checked events of the failed page; only failed ones are touched."""
    form = await request.post()
    chosen = [value for value in form.getall("event_id", []) if isinstance(value, str)]
    ids = [value for value in dict.fromkeys(chosen) if re.fullmatch(EVENT_ID, value)]
    results = await operate.requeue_events(_store(request), ids, by=_by(request), allowed=operate.RETRYABLE)
    queued = sum(1 for r in results if r.verdict == "requeued")
    return redirect(f"{PREFIX}/failed?retried={queued}&refused={len(chosen) - queued}")


async def retry_matching(request: web.Request) -> web.StreamResponse:
    """Retry every failed event that matches the form's filter (action, route, reason, since), not only the
    page's newest: what an operator does once the cause of a batch of failures is fixed."""
    form = await request.post()

    def field(name: str) -> str | None:
        value = form.get(name)
        return value.strip() or None if isinstance(value, str) else None

    since_text = field("since")
    try:
        since = operate.parse_when(since_text) if since_text else None
    except ValueError:
        return redirect(f"{PREFIX}/failed?bad_since=1")
    flt = operate.EventFilter("failed", action=field("action"), route=field("route"), since=since)
    reason = (field("reason") or "").lower()
    chosen = [
        event.id
        for event in await operate.list_events(_store(request), flt, limit=None)
        if reason in event.reason.lower()
    ]
    results = await operate.requeue_events(
        _store(request), chosen, by=_by(request), allowed=operate.RETRYABLE
    )
    queued = sum(1 for r in results if r.verdict == "requeued")
    return redirect(f"{PREFIX}/failed?retried={queued}&refused={len(chosen) - queued}")


async def retry_one(request: web.Request) -> web.StreamResponse:
    """Run one event again: a failed one (its retry button), or a settled one on purpose (the event page)."""
    event_id = request.match_info["event_id"]
    (result,) = await operate.requeue_events(
        _store(request), [event_id], by=_by(request), allowed=operate.REPLAYABLE
    )
    back = request.query.get("back")
    if back == "failed":  # the row buttons of the failed page return there
        queued = int(result.verdict == "requeued")
        return redirect(f"{PREFIX}/failed?retried={queued}&refused={1 - queued}")
    return redirect(f"{PREFIX}/events/{event_id}?requeue={result.verdict}&was={result.previous}")


async def discard_one(request: web.Request) -> web.StreamResponse:
    """Give up on a failed event, with a reason; it stays listed as discarded."""
    event_id = request.match_info["event_id"]
    form = await request.post()
    reason = form.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        return redirect(f"{PREFIX}/events/{event_id}?discard=noreason")
    (result,) = await operate.discard_events(_store(request), [event_id], by=_by(request), reason=reason)
    return redirect(f"{PREFIX}/events/{event_id}?discard={'done' if result.discarded else 'refused'}")


def _by(request: web.Request) -> str:
    """Who acted, for the event's history: the basic-auth user, or for a token the listener's
    $FACTSYNC_OPERATOR (as the CLI names its operator); never a secret."""
    who = request[VIEWER].who
    if who == "token":
        who = os.environ.get("FACTSYNC_OPERATOR", "").strip() or "token"
    return f"dashboard:{who}"


# Seconds between the reloads of the pages that change by themselves (no script: a meta refresh).
REFRESH_SECONDS = 30


def _refresh(request: web.Request) -> int:
    """The page's reload interval: ``?refresh=0`` switches it off."""
    return 0 if request.query.get("refresh") == "0" else REFRESH_SECONDS


_FILTERS = ("status", "source", "action", "route", "invoice")


async def events_page(request: web.Request) -> web.StreamResponse:
    query = request.query
    wanted = {
        name: query.get(name, "").strip() for name in ("status", "source", "action", "route", "invoice")
    }
    status = next((s for s in STATUSES if s == wanted["status"]), None)
    flt = operate.EventFilter(
        status=status,
        source=wanted["source"] or None,
        action=wanted["action"] or None,
        route=wanted["route"] or None,
        invoice=wanted["invoice"] or None,
    )
    page = max(1, _count(query.get("page")) or 1)
    # One more than a page: whether an older page exists.
    events = await operate.list_events(_store(request), flt, limit=PAGE_SIZE + 1, skip=(page - 1) * PAGE_SIZE)
    return render(
        request,
        "events.html",
        title="Events",
        refresh=_refresh(request),
        rows=[_row(request, e) for e in events[:PAGE_SIZE]],
        statuses=STATUSES,
        wanted=wanted,
        page_size=PAGE_SIZE,
        page=page,
        older=len(events) > PAGE_SIZE,
        filters=urlencode({name: value for name, value in wanted.items() if value}),
    )


# What a single re-enqueue or discard did, as the event page says it after the redirect.
_REQUEUE_NOTES = {
    "requeued": "Queued again; reload to follow it.",
    "waiting": "Not queued again: it is queued or running already.",
    "refused": "Not queued again: only a settled event can run again.",
    "missing": "Not queued again: the event is gone.",
}
_DISCARD_NOTES = {
    "done": "Discarded: the event left the failed store.",
    "refused": "Not discarded: only a failed event can be discarded.",
    "noreason": "Not discarded: say why, for whoever looks at it later.",
}


async def event_page(request: web.Request) -> web.StreamResponse:
    event_id = request.match_info["event_id"]
    event = await operate.get_event(_store(request), event_id)
    if event is None:
        return render(request, "error.html", status=404, title="Not found", message=f"No event {event_id}.")
    row = _row(request, event)
    attempts = request.app[SCRUB].value(await _store(request).attempts(event_id))
    outcomes = sorted(row["outcomes"].items())
    verdict = request.query.get("requeue", "")
    discard = request.query.get("discard", "")
    return render(
        request,
        "event.html",
        title=f"Event {event.id}",
        event=row,
        attempts=attempts,
        outcomes=outcomes,
        # The failure's exchange is usually the failed route's own, shown with it already.
        show_last_exchange=bool(row["last_exchange"])
        and all(outcome.get("exchange") != row["last_exchange"] for _, outcome in outcomes),
        can_retry=event.status in operate.RETRYABLE,
        can_replay=event.status in operate.REPLAYABLE and event.status not in operate.RETRYABLE,
        can_discard=event.status == "failed",
        good=verdict == "requeued" or discard == "done",
        note=_REQUEUE_NOTES.get(verdict) or _DISCARD_NOTES.get(discard, ""),
    )


# --- template filters ----------------------------------------------------------------------------------


def _when(value: float | None) -> str:
    if not value:
        return "–"
    return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: float | None) -> str:
    if not value:
        return "–"
    seconds = max(0, int(time.time() - float(value)))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
