"""The dashboard over real HTTP on a real listener and Redis, and once in a real headless Chromium.

What must hold: off (404) without credentials; 401 without or with wrong ones; pages render and escape;
a POST without the session's CSRF token is a 403; a retry re-enqueues; no secret reaches any page.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

import worker.web.dashboard as dashboard_module
from tests.conftest import (
    HOOK_SECRET,
    OLD_HOOK_SECRET,
    SEED_HOOKS,
    SOURCE_KEY,
    TARGET_KEY,
    Listener,
    hook_body,
    make_settings,
    sign,
)
from worker import keys
from worker.queue import fan_out_job_id
from worker.ratelimit import Limit, SharedRateLimit, publish_limits
from worker.store import EventStore
from worker.web.app import create_app
from worker.web.dashboard import BUCKET_SECONDS, COOKIE, activity

TOKEN = "dashboard-token-4f3e2d1c0b9a8776"
PASSWORD = "dashboard-password-b7c6d5e4"
SECRETS = (TOKEN, PASSWORD, SOURCE_KEY, TARGET_KEY, HOOK_SECRET, OLD_HOOK_SECRET)
# Debian's chromium; Playwright drives it (its own browser download is never used).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
INSTALL_CHROMIUM = "apt-get update && apt-get install -y chromium"


@dataclass
class Dashboard:
    url: str
    store: EventStore
    redis: Redis
    # A browser-like client: keeps cookies, also those of 127.0.0.1 (aiohttp's default jar refuses them).
    session: aiohttp.ClientSession

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.url + path, allow_redirects=False, **kwargs) as r:
            return r.status, await r.text(), r

    async def post(
        self, path: str, data: dict[str, Any] | list[tuple[str, str]], **kwargs: Any
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.post(self.url + path, data=data, allow_redirects=False, **kwargs) as r:
            return r.status, await r.text(), r

    async def login(self) -> None:
        status, _, r = await self.post("/dashboard/login", {"token": TOKEN})
        assert status == 303, status
        assert r.headers["Location"] == "/dashboard"

    async def csrf(self, path: str = "/dashboard/failed") -> str:
        status, html, _ = await self.get(path)
        assert status == 200, html
        found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
        assert found, html
        return found.group(1)

    async def hook(self, action: str = "invoice_is_paid", data: dict[str, Any] | None = None) -> str:
        body = hook_body(action, data or SEED_HOOKS[action])
        async with self.session.post(f"{self.url}/hooks/hostfact", data=body, headers=sign(body)) as r:
            assert r.status == 202, await r.text()
            return str((await r.json())["event_id"])

    async def failed_event(self, reason: str = "the API refused: invoice show: no such invoice") -> str:
        """An event in the failed store as a worker leaves it: reason, exchange, calls, tries."""
        event_id = await self.hook()
        await self.store.start(event_id, ["sales"])
        await self.store.record_try(event_id, 3)
        await self.store.record_outcome(
            event_id,
            "sales",
            {
                "status": "failed",
                "reason": reason,
                "tries": 3,
                "calls": ["hostfact: invoice.show 2", "wefact: invoice.show F0001"],
                "exchange": {
                    "administration": "wefact",
                    "controller": "invoice",
                    "action": "show",
                    "params": {"api_key": "***", "InvoiceCode": "F0001"},
                    "http_status": 200,
                    "response": '{"status":"error","errors":["Invoice not found"]}',
                    "error": "Invoice not found",
                },
            },
        )
        event = await self.store.get(event_id)
        assert event is not None and event.status == "failed"
        return event_id


@pytest.fixture
async def open_dashboard(redis: Redis, redis_url: str) -> AsyncIterator[Any]:
    """Start listeners with given dashboard settings; each gets its own cookie jar."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(**dashboard: Any) -> Dashboard:
        settings = make_settings(redis_url, dashboard=dashboard)
        runner = web.AppRunner(create_app(settings, redis_url))
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(session)
        store = EventStore.for_settings(redis, settings)
        return Dashboard(f"http://{host}:{port}", store, redis, session)

    yield start
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def dashboard(open_dashboard: Any) -> Dashboard:
    return await open_dashboard(token=TOKEN)  # type: ignore[no-any-return]


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


BEARER = {"Authorization": f"Bearer {TOKEN}"}

# --- off unless configured --------------------------------------------------------------------------------


async def test_without_credentials_the_dashboard_is_not_mounted(listener: Listener) -> None:
    for path in ("/dashboard", "/dashboard/", "/dashboard/login", "/dashboard/failed"):
        async with listener.session.get(listener.url + path) as r:
            assert r.status == 404, path
    async with listener.session.post(listener.url + "/dashboard/login", data={"token": ""}) as r:
        assert r.status == 404


# --- authentication -----------------------------------------------------------------------------------------


async def test_token_mode_refuses_missing_and_wrong_credentials(open_dashboard: Any) -> None:
    # Many wrong credentials on purpose: a sign-in limit that does not step in (it has a test of its own).
    dashboard: Dashboard = await open_dashboard(token=TOKEN, sign_in_limit=1000)
    wrong: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {base64.b64encode(TOKEN.encode()).decode()}"},
        {"Authorization": TOKEN},
        {"Cookie": f"{COOKIE}=abc.9999999999.deadbeef"},
    ]
    for headers in wrong:
        for path in ("/dashboard", "/dashboard/failed", "/dashboard/events"):
            status, html, r = await dashboard.get(path, headers=headers)
            assert status == 401, (headers, path)
            assert r.headers.getall("WWW-Authenticate") == ['Bearer realm="factsync dashboard"']
            assert 'name="token"' in html  # a browser gets the login form
            assert COOKIE not in r.cookies
    # A POST without credentials is refused for the credentials, before any CSRF check.
    status, _, _ = await dashboard.post("/dashboard/failed/retry", {"event_id": "evt_00"})
    assert status == 401


async def test_a_bearer_token_opens_every_page(dashboard: Dashboard) -> None:
    for path in ("/dashboard", "/dashboard/", "/dashboard/failed", "/dashboard/events"):
        status, html, r = await dashboard.get(path, headers=BEARER)
        assert status == 200, (path, html)
        assert r.headers["Content-Type"].startswith("text/html")
        assert "script-src" not in r.headers["Content-Security-Policy"]  # default-src 'none': no script
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Cache-Control"] == "no-store"


async def test_wrong_sign_ins_are_throttled_per_client(dashboard: Dashboard) -> None:
    """Five wrong tokens in a minute, and the client waits out the minute: the right token included."""
    for _ in range(5):
        status, _, _ = await dashboard.post("/dashboard/login", {"token": "wrong"})
        assert status == 401
    status, html, r = await dashboard.post("/dashboard/login", {"token": TOKEN})
    assert status == 429 and "Too many wrong sign-ins" in html
    assert 50 <= int(r.headers["Retry-After"]) <= 60
    assert COOKIE not in r.cookies
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with dashboard.session.get(dashboard.url + "/dashboard", headers=headers) as bearer:
        assert bearer.status == 429, "a header's credentials are throttled alike"


async def test_the_login_form_sets_a_signed_httponly_strict_session_cookie(dashboard: Dashboard) -> None:
    status, html, _ = await dashboard.get("/dashboard/login")
    assert status == 200 and 'name="token"' in html

    status, html, r = await dashboard.post("/dashboard/login", {"token": "wrong"})
    assert status == 401 and "not the dashboard" in html
    assert COOKIE not in r.cookies

    status, _, r = await dashboard.post("/dashboard/login", {"token": TOKEN})
    assert status == 303 and r.headers["Location"] == "/dashboard"
    cookie = r.cookies[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/dashboard"
    assert TOKEN not in cookie.value
    assert (await dashboard.get("/dashboard"))[0] == 200

    # Tampering with the session id breaks the signature.
    sid, expires, who, signature = cookie.value.split(".")
    forged = f"{sid}x.{expires}.{who}.{signature}"
    async with aiohttp.ClientSession() as other:
        async with other.get(dashboard.url + "/dashboard", headers={"Cookie": f"{COOKIE}={forged}"}) as r:
            assert r.status == 401
        # An expired session (its expiry is signed, so it cannot be moved) is refused too.
        async with other.get(
            dashboard.url + "/dashboard",
            headers={"Cookie": f"{COOKIE}={sid}.{int(time.time()) - 1}.{who}.{signature}"},
        ) as r:
            assert r.status == 401

    # Signing out needs the CSRF token and ends the session.
    assert (await dashboard.post("/dashboard/logout", {}))[0] == 403
    status, _, r = await dashboard.post("/dashboard/logout", {"csrf": await dashboard.csrf("/dashboard")})
    assert status == 303
    assert (await dashboard.get("/dashboard"))[0] == 401


async def test_basic_auth_is_challenged_on_every_request(open_dashboard: Any) -> None:
    dashboard: Dashboard = await open_dashboard(username="ops", password=PASSWORD, sign_in_limit=1000)
    status, _, r = await dashboard.get("/dashboard")
    assert status == 401
    assert r.headers.getall("WWW-Authenticate") == ['Basic realm="factsync dashboard", charset="UTF-8"']
    for headers in (
        basic("ops", "wrong"),
        basic("other", PASSWORD),
        basic("ops", PASSWORD + "x"),
        {"Authorization": "Basic !!!"},
        BEARER,
    ):
        assert (await dashboard.get("/dashboard", headers=headers))[0] == 401, headers
    # No login form without a token, and the session cookie alone is no credential in basic mode.
    status, _, _ = await dashboard.post("/dashboard/login", {"token": PASSWORD})
    assert status == 401
    status, _, r = await dashboard.get("/dashboard", headers=basic("ops", PASSWORD))
    assert status == 200
    assert COOKIE in r.cookies  # it carries the CSRF session
    assert (await dashboard.get("/dashboard"))[0] == 401

    # Retry works with basic auth plus the session's CSRF token, and records who did it.
    event_id = await dashboard.failed_event()
    status, html, _ = await dashboard.get("/dashboard/failed", headers=basic("ops", PASSWORD))
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert csrf
    status, _, _ = await dashboard.post(
        f"/dashboard/events/{event_id}/retry", {}, headers=basic("ops", PASSWORD)
    )
    assert status == 403
    status, _, _ = await dashboard.post(
        f"/dashboard/events/{event_id}/retry", {"csrf": csrf.group(1)}, headers=basic("ops", PASSWORD)
    )
    assert status == 303
    event = await dashboard.store.get(event_id)
    assert event is not None and event.status == "queued"
    assert event.history[-1]["by"] == "dashboard:ops"


# --- pages ------------------------------------------------------------------------------------------------


async def test_pages_show_the_failed_store_and_the_event_in_full(dashboard: Dashboard) -> None:
    await dashboard.login()
    event_id = await dashboard.failed_event()
    done_id = await dashboard.hook("invoice_is_sent")

    status, html, _ = await dashboard.get("/dashboard")
    assert status == 200
    assert 'id="events-failed">1<' in html
    assert event_id in html  # latest failures
    assert "No worker has a heartbeat" in html

    status, html, _ = await dashboard.get("/dashboard/failed")
    assert status == 200
    assert event_id in html and "the API refused: invoice show: no such invoice" in html
    assert f'formaction="/dashboard/events/{event_id}/retry?back=failed"' in html
    assert f'name="event_id" value="{event_id}"' in html

    status, html, _ = await dashboard.get(f"/dashboard/events/{event_id}")
    assert status == 200
    for shown in (
        "invoice_is_paid",
        "hostfact: invoice.show 2",
        "wefact: invoice.show F0001",
        "Invoice not found",
    ):
        assert shown in html, shown
    assert 'id="event-tries">3<' in html
    assert 'id="retry"' in html and 'id="discard"' in html

    status, html, _ = await dashboard.get("/dashboard/events?status=failed")
    assert event_id in html and done_id not in html
    status, html, _ = await dashboard.get("/dashboard/events?action=invoice_is_sent")
    assert done_id in html and event_id not in html
    status, html, _ = await dashboard.get("/dashboard/events?invoice=F0001&status=bogus")
    assert done_id in html and event_id in html

    assert (await dashboard.get("/dashboard/events/evt_0000000000000ffffffffff"))[0] == 404
    assert (await dashboard.get("/dashboard/events/not-an-id"))[0] == 404


async def test_everything_shown_is_escaped(dashboard: Dashboard) -> None:
    await dashboard.login()
    event_id = await dashboard.failed_event(reason='the API refused: <script>alert("x")</script> & more')
    for path in ("/dashboard", "/dashboard/failed", f"/dashboard/events/{event_id}"):
        _, html, _ = await dashboard.get(path)
        assert "<script>" not in html, path
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more" in html, path
    _, html, _ = await dashboard.get('/dashboard/events?action="><b>x')
    assert "<b>x" not in html and "&#34;&gt;&lt;b&gt;x" in html


# --- retry and CSRF ---------------------------------------------------------------------------------------


async def test_a_retry_without_the_sessions_csrf_token_is_forbidden(
    dashboard: Dashboard, open_dashboard: Any
) -> None:
    await dashboard.login()
    event_id = await dashboard.failed_event()
    other: Dashboard = await open_dashboard(token=TOKEN)
    await other.login()
    others_csrf = await other.csrf()

    for form in ({}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": others_csrf}):
        for path in (f"/dashboard/events/{event_id}/retry", "/dashboard/failed/retry"):
            status, html, _ = await dashboard.post(path, {**form, "event_id": event_id})
            assert status == 403, (form, path)
            assert "security token" in html
    # A bearer request starts a new session: no form was ever shown to it, so nothing it sends can match.
    async with aiohttp.ClientSession() as bare:
        async with bare.post(
            f"{dashboard.url}/dashboard/events/{event_id}/retry",
            data={"csrf": await dashboard.csrf()},
            headers=BEARER,
        ) as r:
            assert r.status == 403

    event = await dashboard.store.get(event_id)
    assert event is not None and event.status == "failed" and event.history == []
    # Only the hook's own fan-out job (no worker runs here): no re-enqueue happened.
    assert await dashboard.redis.zrange(keys.QUEUE, 0, -1) == [fan_out_job_id(event_id, 0).encode()]


async def test_a_retry_with_the_csrf_token_re_enqueues_the_event(dashboard: Dashboard) -> None:
    await dashboard.login()
    event_id = await dashboard.failed_event()

    status, _, r = await dashboard.post(
        f"/dashboard/events/{event_id}/retry", {"csrf": await dashboard.csrf()}
    )

    assert status == 303
    assert r.headers["Location"] == f"/dashboard/events/{event_id}?requeue=requeued&was=failed"
    event = await dashboard.store.get(event_id)
    assert event is not None
    assert (event.status, event.generation, event.reason) == ("queued", 1, "")
    assert event.history[-1]["by"] == "dashboard:token" and event.history[-1]["generation"] == 1
    assert fan_out_job_id(event_id, 1).encode() in await dashboard.redis.zrange(keys.QUEUE, 0, -1)
    assert await dashboard.store.ids("failed") == []
    _, html, _ = await dashboard.get(r.headers["Location"])
    assert "Queued again" in html and "dashboard:token" in html

    # Asking again while it waits does nothing.
    status, _, r = await dashboard.post(
        f"/dashboard/events/{event_id}/retry", {"csrf": await dashboard.csrf()}
    )
    assert r.headers["Location"].endswith("requeue=waiting&was=queued")
    assert fan_out_job_id(event_id, 2).encode() not in await dashboard.redis.zrange(keys.QUEUE, 0, -1)


async def test_bulk_retry_re_enqueues_the_checked_failed_events_only(dashboard: Dashboard) -> None:
    await dashboard.login()
    first, second, left = [await dashboard.failed_event() for _ in range(3)]
    waiting = await dashboard.hook("invoice_is_sent")
    csrf = await dashboard.csrf()

    status, _, r = await dashboard.post(
        "/dashboard/failed/retry",
        [
            ("csrf", csrf),
            ("event_id", first),
            ("event_id", second),
            ("event_id", waiting),
            ("event_id", "x:y"),
        ],
    )

    assert status == 303 and r.headers["Location"] == "/dashboard/failed?retried=2&refused=2"
    statuses = {i: e.status for i in (first, second, left, waiting) if (e := await dashboard.store.get(i))}
    assert statuses == {first: "queued", second: "queued", left: "failed", waiting: "queued"}
    assert (await dashboard.store.get(waiting)).generation == 0  # type: ignore[union-attr]
    _, html, _ = await dashboard.get(r.headers["Location"])
    assert "Queued 2 events again." in html and left in html and first not in html

    # The row button of the failed page retries its one event and comes back.
    status, _, r = await dashboard.post(f"/dashboard/events/{left}/retry?back=failed", {"csrf": csrf})
    assert r.headers["Location"] == "/dashboard/failed?retried=1&refused=0"
    assert await dashboard.store.ids("failed") == []


async def test_discard_needs_a_reason_and_keeps_the_event(dashboard: Dashboard) -> None:
    await dashboard.login()
    event_id = await dashboard.failed_event()
    csrf = await dashboard.csrf()
    _, _, r = await dashboard.post(f"/dashboard/events/{event_id}/discard", {"csrf": csrf, "reason": " "})
    assert r.headers["Location"].endswith("discard=noreason")
    _, _, r = await dashboard.post(
        f"/dashboard/events/{event_id}/discard", {"csrf": csrf, "reason": "invoice deleted in HostFact"}
    )
    assert r.headers["Location"].endswith("discard=done")
    event = await dashboard.store.get(event_id)
    assert event is not None and event.status == "discarded"
    _, html, _ = await dashboard.get(f"/dashboard/events/{event_id}")
    assert "discarded: invoice deleted in HostFact" in html and 'id="retry"' in html


# --- secrets ----------------------------------------------------------------------------------------------


async def test_no_secret_appears_on_any_page(open_dashboard: Any) -> None:
    dashboard: Dashboard = await open_dashboard(token=TOKEN, username="ops", password=PASSWORD)
    await dashboard.login()
    # Worst case: secrets that slipped into what an event holds (a server echoing the key, a hook's data).
    in_reason = await dashboard.failed_event(reason=f"the API refused: bad key {TARGET_KEY} / {HOOK_SECRET}")
    leaky = await dashboard.failed_event()
    await dashboard.store.record_outcome(
        leaky,
        "sales",
        {
            "status": "failed",
            "reason": f"echo {SOURCE_KEY}",
            "exchange": {
                "params": {"api_key": SOURCE_KEY, "password": "hunter2hunter2", "nested": [{"token": TOKEN}]},
                "response": f"api_key={TARGET_KEY}&pw={PASSWORD}&old={OLD_HOOK_SECRET}",
            },
        },
    )
    await dashboard.store.set_status(
        leaky, "failed", last_exchange={"params": {"api_key": TARGET_KEY}, "response": PASSWORD}
    )
    pages = [
        "/dashboard",
        "/dashboard/failed",
        "/dashboard/events",
        "/dashboard/events?status=failed",
        f"/dashboard/events/{leaky}",
        f"/dashboard/events/{in_reason}",
    ]
    for path in pages:
        status, html, _ = await dashboard.get(path)
        assert status == 200, path
        for secret in (*SECRETS, "hunter2hunter2"):
            assert secret not in html, (path, secret)
    async with aiohttp.ClientSession() as stranger:
        for path in ("/dashboard/login", "/dashboard"):
            async with stranger.get(dashboard.url + path) as r:
                html = await r.text()
            assert not any(secret in html for secret in SECRETS), path
    _, html, _ = await dashboard.get(f"/dashboard/events/{leaky}")
    assert "sales: echo ***" in html  # blanked, not dropped
    _, html, _ = await dashboard.get(f"/dashboard/events/{in_reason}")
    assert "bad key *** / ***" in html


# --- the chart --------------------------------------------------------------------------------------------


async def test_activity_counts_events_per_five_minutes_from_the_indexes(redis: Redis) -> None:
    now = (int(time.time()) // BUCKET_SECONDS) * BUCKET_SECONDS + 100.0  # 100 s into the current bucket
    us = 1_000_000

    def at(seconds_ago: float) -> int:
        return int((now - seconds_ago) * us)

    await redis.zadd(keys.EVENTS, {"a": at(10), "b": at(20), "c": at(400), "old": at(4000)})
    await redis.zadd(keys.by_status("done"), {"a": at(5), "c": at(390)})
    # Failures are counted when they happen (the store's counters), not read from the failed index.
    await redis.set(keys.failures(int(now - 100)), 1)
    await redis.set(keys.failures(int(now - 100) - 3900 // BUCKET_SECONDS * BUCKET_SECONDS), 1)
    await redis.zadd(keys.by_status("ignored"), {"d": at(700)})

    buckets = await activity(redis, now)

    assert len(buckets) == 12 and buckets[-1].start == now - 100
    assert all(b.start - a.start == BUCKET_SECONDS for a, b in itertools.pairwise(buckets))
    last, previous, before = buckets[-1], buckets[-2], buckets[-3]
    assert (last.received, last.done, last.failed, last.ignored) == (2, 1, 1, 0)
    assert (previous.received, previous.done, previous.failed, previous.ignored) == (1, 1, 0, 0)
    assert (before.received, before.ignored) == (0, 1)
    assert sum(b.received for b in buckets) == 3  # an hour ago is out of the window
    assert sum(b.failed for b in buckets) == 1


async def test_the_overview_shows_the_hours_failure_rate(dashboard: Dashboard) -> None:
    failed_id = await dashboard.failed_event()
    done_id = await dashboard.hook()
    await dashboard.store.start(done_id, ["sales"])
    await dashboard.store.record_outcome(done_id, "sales", {"status": "done", "detail": "ok", "calls": []})
    _, html, _ = await dashboard.get("/dashboard", headers=BEARER)
    assert 'id="failure-rate">50.0%<' in html
    assert "2 received, 2 settled (about 0.0 a minute)" in html
    assert html.count("<rect") >= 12
    # Retried and done since: the hour still had that failure (once rewritten to 0 %).
    await dashboard.store.requeue(failed_id, by="ops")
    await dashboard.store.start(failed_id, ["sales"])
    await dashboard.store.record_outcome(failed_id, "sales", {"status": "done", "detail": "ok", "calls": []})
    _, html, _ = await dashboard.get("/dashboard", headers=BEARER)
    assert 'id="failure-rate">33.3%<' in html


# --- a real browser ----------------------------------------------------------------------------------------

LINES = [{"Description": "Setupfee", "PriceExcl": "150", "TaxPercentage": "21"}]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def playwright_or_fail() -> Any:
    """Playwright's entry point, once chromium and playwright are known to be there (else a loud failure)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard's browser test needs it. Install it: {INSTALL_CHROMIUM}"
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]' installs it (no `playwright install`)")
    return async_playwright


@pytest.mark.slow
async def test_in_a_browser_an_operator_signs_in_sees_the_failure_retries_it_and_sees_it_done(
    redis: Redis, redis_url: str
) -> None:
    async_playwright = playwright_or_fail()
    from tests.stack import running_stack

    async with running_stack(redis_url, dashboard={"token": TOKEN}) as stack:
        # The target refuses every invoice call: the sync's retries run out fast and the event fails.
        stack.hostfact.add_debtor(CompanyName="Company X")
        stack.target.faults.inject("http_503", controller="invoice", times=100)
        await stack.call("invoice", "add", DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
        (failed,) = await stack.settled(within=30)
        assert failed.status == "failed", failed
        stack.target.faults.clear()  # the cause is fixed; now the operator retries
        url = stack.running[0].listener_url
        assert url is not None

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                response = await page.goto(f"{url}/dashboard")
                assert response is not None and response.status == 401
                await page.fill("input[name=token]", TOKEN)
                async with page.expect_navigation():
                    await page.click("button[type=submit]")
                assert await page.inner_text("h1") == "Overview"
                cookies = await page.context.cookies()
                (session,) = [c for c in cookies if c["name"] == COOKIE]
                assert session["httpOnly"] is True and session["sameSite"] == "Strict"

                await page.click("a[href='/dashboard/failed']")
                row = page.locator("#failed tr", has_text=failed.id)
                assert await row.count() == 1
                assert "gave up after 4 tries" in await row.inner_text()
                async with page.expect_navigation():
                    await row.locator("button", has_text="Retry").click()
                assert "Queued 1 event again." in await page.inner_text("#flash")

                await page.goto(f"{url}/dashboard/events/{failed.id}")
                deadline = time.monotonic() + 30
                while (status := await page.inner_text("#event-status")) != "done":
                    assert time.monotonic() < deadline, f"still {status} after the retry"
                    await asyncio.sleep(0.2)
                    await page.reload()
                text = await page.inner_text("main")
                assert "dashboard:token" in text and "queued again (generation 1)" in text
                for secret in SECRETS:
                    assert secret not in await page.content()
            finally:
                await browser.close()
        event = await stack.store.get(failed.id)
        assert event is not None and event.status == "done" and event.generation == 1


async def test_an_event_shows_each_try_and_whether_it_waits(dashboard: Dashboard) -> None:
    await dashboard.login()
    event_id = await dashboard.hook()
    await dashboard.store.start(event_id, ["sales"])
    entry = {
        "at": time.time(),
        "route": "sales",
        "try": 1,
        "outcome": "retry",
        "ms": 41,
        "calls": ["wefact: invoice.show 7"],
        "note": "HTTP 503",
        "until": time.time() + 120,
    }
    await dashboard.store.record_attempt(event_id, entry, waiting="retry backoff")

    status, html, _ = await dashboard.get(f"/dashboard/events/{event_id}")
    assert status == 200
    assert 'id="event-status"><span class="status s-waiting">waiting' in html
    assert 'id="event-waiting">retry backoff, next try' in html
    assert 'id="event-attempts"' in html and "wefact: invoice.show 7" in html and "HTTP 503" in html
    status, html, _ = await dashboard.get("/dashboard/events")
    assert "s-waiting" in html, "the list says waiting, not running"


async def test_a_ban_pause_is_a_banner_on_the_overview(dashboard: Dashboard) -> None:
    await dashboard.login()
    status, html, _ = await dashboard.get("/dashboard")
    assert status == 200 and 'id="ban-' not in html
    # What a worker does when it starts; then its API client met a 403.
    await publish_limits(dashboard.redis, {"wefact": Limit("target", 150)})
    await SharedRateLimit(dashboard.redis, {}).pause("wefact", 120)
    status, html, _ = await dashboard.get("/dashboard")
    assert 'id="ban-wefact"' in html and "Calls to wefact are paused" in html


async def test_retry_all_failed_matching_a_filter_with_the_operators_name(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTSYNC_OPERATOR", "Mila")
    await dashboard.login()
    refused = await dashboard.failed_event("the API refused: invoice show: no such invoice")
    timed_out = await dashboard.failed_event("gave up after 10 tries: HTTP 503")
    status, html, _ = await dashboard.get("/dashboard/failed")
    assert 'id="retry-all-matching"' in html
    csrf = await dashboard.csrf("/dashboard/failed")
    form = {"csrf": csrf, "action": "invoice_is_paid", "route": "", "reason": "http 503", "since": "1h"}
    status, _, r = await dashboard.post("/dashboard/failed/retry-matching", form)
    assert status == 303 and r.headers["Location"] == "/dashboard/failed?retried=1&refused=0"
    assert (await dashboard.store.get(timed_out)).status == "queued"  # type: ignore[union-attr]
    still = await dashboard.store.get(refused)
    assert still is not None and still.status == "failed", "the filter left it alone"
    again = await dashboard.store.get(timed_out)
    assert again is not None and again.history[-1]["by"] == "dashboard:Mila"
    _, _, r = await dashboard.post("/dashboard/failed/retry-matching", form | {"since": "yesterday-ish"})
    assert r.headers["Location"] == "/dashboard/failed?bad_since=1"


async def test_lists_show_the_invoice_and_reload_unless_told_not_to(dashboard: Dashboard) -> None:
    await dashboard.login()
    await dashboard.hook("invoice_is_sent")
    status, html, _ = await dashboard.get("/dashboard/events")
    assert status == 200 and "<th>invoice</th>" in html and "<td>F0001</td>" in html
    assert '<meta http-equiv="refresh" content="30">' in html and 'id="refresh-off"' in html
    _, html, _ = await dashboard.get("/dashboard/events?refresh=0")
    assert 'http-equiv="refresh"' not in html
    # At phone width, tables scroll inside the page instead of widening it.
    assert "@media (max-width: 700px)" in html


async def test_the_events_list_pages_through_older_events(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_module, "PAGE_SIZE", 2)
    await dashboard.login()
    newest_first = [await dashboard.hook("invoice_is_sent") for _ in range(3)][::-1]

    _, first, _ = await dashboard.get("/dashboard/events?action=invoice_is_sent")
    assert [e for e in newest_first if e in first] == newest_first[:2]
    assert 'id="older"' in first and 'id="newer"' not in first
    assert "/dashboard/events?action=invoice_is_sent&amp;page=2" in first, "the filter is kept"
    _, second, _ = await dashboard.get("/dashboard/events?action=invoice_is_sent&page=2")
    assert [e for e in newest_first if e in second] == newest_first[2:]
    assert 'id="newer"' in second and 'id="older"' not in second


@pytest.mark.slow
async def test_on_a_phone_an_operator_sees_the_ban_and_retries_all_matching(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 390 px the pages fit the screen; the ban banner, the filter and its retry work by touch."""
    async_playwright = playwright_or_fail()
    monkeypatch.setenv("FACTSYNC_OPERATOR", "Mila")
    timed_out = await dashboard.failed_event("gave up after 10 tries: HTTP 503")
    refused = await dashboard.failed_event("the API refused: invoice show: no such invoice")
    await publish_limits(dashboard.redis, {"wefact": Limit("target", 150)})
    await SharedRateLimit(dashboard.redis, {}).pause("wefact", 120)
    waiting = await dashboard.hook("invoice_is_sent")
    await dashboard.store.start(waiting, ["sales"])
    attempt = {"at": time.time(), "route": "sales", "try": 1, "outcome": "retry", "ms": 41, "calls": []}
    attempt |= {"note": "HTTP 503", "until": time.time() + 120}
    await dashboard.store.record_attempt(waiting, attempt, waiting="retry backoff")
    monkeypatch.setattr(dashboard_module, "PAGE_SIZE", 2)
    newest_first = [waiting, refused, timed_out]

    async def fits(page: Any) -> None:
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{page.url} is {overflow} px wider than the phone"

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844}, has_touch=True)
            await page.goto(f"{dashboard.url}/dashboard")
            await page.fill("input[name=token]", TOKEN)
            async with page.expect_navigation():
                await page.tap("button[type=submit]")
            assert await page.is_visible("#ban-wefact")
            assert "Calls to wefact are paused" in await page.inner_text("#ban-wefact")
            await fits(page)

            await page.goto(f"{dashboard.url}/dashboard/failed")
            await fits(page)
            assert await page.locator("#failed tr", has_text=timed_out).count() == 1
            await page.fill("#retry-matching input[name=reason]", "http 503")
            async with page.expect_navigation():
                await page.tap("#retry-all-matching")
            assert "Queued 1 event again." in await page.inner_text("#flash")

            # Two a page: the newest two, then the older ones; each row names its invoice.
            await page.goto(f"{dashboard.url}/dashboard/events")
            assert await page.locator("meta[http-equiv=refresh]").count() == 1
            await fits(page)
            listed = await page.inner_text("main")
            assert [e for e in newest_first if e in listed] == newest_first[:2]
            assert await page.locator("td", has_text="F0001").count() >= 2
            async with page.expect_navigation():
                await page.tap("#older")
            assert await page.locator("a", has_text=newest_first[2]).count() == 1
            async with page.expect_navigation():
                await page.tap("#refresh-off")
            assert await page.locator("meta[http-equiv=refresh]").count() == 0

            # An event in a retry backoff says so, with each try.
            await page.goto(f"{dashboard.url}/dashboard/events/{waiting}")
            await fits(page)
            assert await page.inner_text("#event-status") == "waiting"
            assert "retry backoff, next try" in await page.inner_text("#event-waiting")
            assert "HTTP 503" in await page.inner_text("#event-attempts")
        finally:
            await browser.close()
    again = await dashboard.store.get(timed_out)
    assert again is not None and again.status == "queued" and again.history[-1]["by"] == "dashboard:Mila"
    left = await dashboard.store.get(refused)
    assert left is not None and left.status == "failed"
