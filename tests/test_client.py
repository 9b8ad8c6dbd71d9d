"""The API client against the simulator over real HTTP in both dialects: calls, paging, failures, secrets."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import tasks.client as client_module
from tasks.client import ApiClient, RateLimit
from tasks.errors import ApiError, BannedError, PermanentError, RateLimited, TransientError
from tasks.model import Administration
from tasks.protocol import Dialect
from tasks.simulator import RunningSimulator, SimAdministration, run_simulator
from tasks.simulator.envelope import CONCURRENT_CALLS

# A key distinctive enough that finding it anywhere (logs, messages, exchanges) can only mean a leak.
KEY = "fsk-LEAK-CANARY-7c3e91d2b4a6"
NAMES: dict[Dialect, str] = {"hostfact": "hf", "wefact": "wf"}
LINES: list[dict[str, Any]] = [
    # Characters that form encoding must escape: &, =, brackets, +, non-ASCII.
    {
        "Description": "Hosting & mail [pro] = 1+1 €",
        "Number": 2,
        "PriceExcl": Decimal("10.50"),
        "TaxPercentage": 21,
    },
    {"Description": "Domein voorbeeld-ünïcode.nl", "PriceExcl": "15", "TaxPercentage": "21"},
]


@dataclass
class RecordingThrottle:
    acquired: list[str] = field(default_factory=list)
    observed: list[tuple[str, RateLimit]] = field(default_factory=list)
    refuse: bool = False

    async def acquire(self, administration: str) -> None:
        if self.refuse:
            raise RateLimited("budget spent", retry_after=1.0)
        self.acquired.append(administration)

    def observe(self, administration: str, rate_limit: RateLimit) -> None:
        self.observed.append((administration, rate_limit))


@dataclass
class Env:
    sim: SimAdministration
    admin: Administration
    client: ApiClient
    throttle: RecordingThrottle
    debtor: int

    def variant(self, **changes: Any) -> ApiClient:
        """Another client for the same administration with changed settings (key, timeouts, url)."""
        values = self.admin.model_dump()
        values.update(changes)
        return ApiClient(Administration(**values), throttle=self.throttle)


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[RunningSimulator]:
    admins = [
        SimAdministration("hf", "hostfact", KEY),
        # WeFact's live limits, explicitly: the simulator's own default may be "unlimited".
        SimAdministration("wf", "wefact", KEY, rate_limit_per_minute=500, rate_limit_per_hour=5000),
        SimAdministration("wf-tight", "wefact", KEY, rate_limit_per_minute=3),
    ]
    async with run_simulator(admins) as running:
        yield running


@pytest.fixture(scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as shared:
        yield shared


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """Every test: the client logs at debug, and no log record of anyone may contain the key."""
    caplog.set_level(logging.DEBUG)
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    for record in records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(record.__dict__)


@pytest.fixture(params=["hostfact", "wefact"])
async def env(
    request: pytest.FixtureRequest, sim: RunningSimulator, session: aiohttp.ClientSession
) -> AsyncIterator[Env]:
    dialect: Dialect = request.param
    name = NAMES[dialect]
    state = sim.admin(name)
    state.reset()
    debtor = state.add_debtor(CompanyName="Canary BV")
    throttle = RecordingThrottle()
    admin = Administration(
        name=name, dialect=dialect, api_url=sim.api_url(name), api_key=KEY, total_timeout=3, connect_timeout=1
    )
    yield Env(
        state, admin, ApiClient(admin, session=session, throttle=throttle), throttle, debtor["Identifier"]
    )
    state.faults.clear()


def seed_invoices(env: Env, count: int) -> list[int]:
    lines = [{"Description": "Seed", "PriceExcl": "10", "TaxPercentage": "21"}]
    return [
        env.sim.add_invoice(Debtor=env.debtor, Status=2, InvoiceLines=lines)["Identifier"]
        for _ in range(count)
    ]


def assert_clean(exc: ApiError) -> None:
    """The key is nowhere in what an error carries to logs and the failed store, and the exchange is JSON."""
    for text in (str(exc), repr(exc), exc.message, json.dumps(exc.exchange)):
        assert KEY not in text
    assert {
        "administration",
        "controller",
        "action",
        "params",
        "http_status",
        "response",
        "elapsed_ms",
    } <= set(exc.exchange)


# -- happy paths ---------------------------------------------------------------------------------------------


async def test_add_show_and_list_an_invoice_with_nested_lines(env: Env) -> None:
    envelope = await env.client.call(
        "invoice", "add", {"Debtor": env.debtor, "Status": 2, "InvoiceLines": LINES}
    )
    assert envelope["status"] == "success" and envelope["controller"] == "invoice"
    added = envelope["invoice"]

    # The nested array reached the server as two real lines, special characters intact.
    stored = env.sim.invoice(int(added["Identifier"]))
    assert [line["Description"] for line in stored["InvoiceLines"]] == [line["Description"] for line in LINES]
    assert env.sim.calls[-1].params["api_key"] == "REDACTED"

    by_id = await env.client.show("invoice", identifier=added["Identifier"])
    by_code = await env.client.show("invoice", code=added["InvoiceCode"])
    assert by_id["Identifier"] == by_code["Identifier"] == added["Identifier"]
    assert [line["Description"] for line in by_id["InvoiceLines"]] == [line["Description"] for line in LINES]
    # Values come back as the API printed them (strings here); 2 × 10.50 + 15.
    assert Decimal(str(by_id["AmountExcl"])) == Decimal("36.00")

    rows = await env.client.list("invoice", searchfor=added["InvoiceCode"])
    assert [row["Identifier"] for row in rows] == [added["Identifier"]]
    assert env.client.last_exchange is not None and env.client.last_exchange["http_status"] == 200
    assert env.client.dialect == env.admin.dialect
    assert env.client.traits.rate_limit_headers == (env.admin.dialect == "wefact")


async def test_list_pages_through_offset_and_limit(env: Env) -> None:
    ids = seed_invoices(env, 5)
    rows = await env.client.list("invoice", page_size=2, status="2")
    assert sorted(int(row["Identifier"]) for row in rows) == sorted(ids)
    pages = [call.params for call in env.sim.calls if call.action == "list"]
    assert [(page["offset"], page["limit"], page["status"]) for page in pages] == [
        ("0", "2", "2"),
        ("2", "2", "2"),
        ("4", "2", "2"),
    ]


async def test_list_reads_the_pages_after_the_first_at_once_with_offsets_in_steps_of_the_limit(
    env: Env,
) -> None:
    ids = seed_invoices(env, 7)
    rows = await env.client.list("invoice", page_size=2, concurrency=3)
    assert sorted(int(row["Identifier"]) for row in rows) == sorted(ids)
    pages = [call.params for call in env.sim.calls if call.action == "list"]
    # HostFact reads offset / limit + 1 as the page number: every offset a multiple of the limit.
    assert sorted(int(page["offset"]) for page in pages) == [0, 2, 4, 6]
    assert {page["limit"] for page in pages} == {"2"}


async def test_an_empty_list_omits_the_plural_key(env: Env) -> None:
    assert await env.client.list("invoice", searchfor="nothing-is-called-this") == []
    assert env.client.last_exchange is not None
    assert '"invoices"' not in env.client.last_exchange["response"]
    assert [row["CompanyName"] for row in await env.client.list("debtor")] == ["Canary BV"]


async def test_a_client_that_owns_its_session(env: Env) -> None:
    async with ApiClient(env.admin) as own:
        assert (await own.show("debtor", identifier=env.debtor))["CompanyName"] == "Canary BV"
        assert KEY not in repr(own)


# -- transient failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "http_status"),
    [
        ("http_500", None, 500),
        ("http_502", None, 502),
        ("http_503", None, 503),
        ("html", 200, 200),
        ("html", 500, 500),
        ("empty_body", None, 200),
        ("lost_answer", None, None),
    ],
)
async def test_faults_that_are_worth_a_retry(
    env: Env, kind: Any, status: int | None, http_status: int | None
) -> None:
    env.sim.faults.inject(kind, controller="debtor", action="show", times=1, status=status)
    with pytest.raises(TransientError) as caught:
        await env.client.show("debtor", identifier=env.debtor)
    assert type(caught.value) is TransientError
    assert caught.value.exchange["http_status"] == http_status
    assert caught.value.exchange["controller"] == "debtor" and caught.value.exchange["action"] == "show"
    assert env.client.last_exchange == caught.value.exchange
    assert_clean(caught.value)
    # The fault is spent; the same client carries on.
    assert (await env.client.show("debtor", identifier=env.debtor))["CompanyName"] == "Canary BV"


async def test_hostfacts_api_lock_is_asked_in_english_and_retried(env: Env) -> None:
    # HostFact answers in Dutch unless the URL asks ?language=en_EN (Pro/config.php); the simulator does the
    # same, so only a client that asks for English recognises the lock (en_EN key
    # "api too many concurrent calls").
    env.sim.faults.inject("concurrent", controller="debtor", action="show", times=1)
    if env.admin.dialect == "hostfact":
        with pytest.raises(TransientError) as caught:
            await env.client.show("debtor", identifier=env.debtor)
        assert type(caught.value) is TransientError
        assert caught.value.exchange["error"].startswith("API has concurrent calls")
    else:
        # WeFact has no such lock and documents no language parameter: its texts decide nothing.
        with pytest.raises(PermanentError) as refused:
            await env.client.show("debtor", identifier=env.debtor)
        assert "gelijktijdige" in refused.value.exchange["error"]
    assert (await env.client.show("debtor", identifier=env.debtor))["CompanyName"] == "Canary BV"


async def test_a_lost_answer_may_still_have_been_applied(env: Env) -> None:
    env.sim.faults.inject("lost_answer", action="add", times=1)
    with pytest.raises(TransientError):
        await env.client.call("invoice", "add", {"Debtor": env.debtor, "Status": 2, "InvoiceLines": LINES})
    # Why the runtime re-reads the target before it writes again.
    assert len(env.sim.invoices) == 1


async def test_no_answer_within_total_timeout(env: Env) -> None:
    client = env.variant(total_timeout=0.3)
    env.sim.faults.inject("timeout", times=1, seconds=5)
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"no answer within 0\.3 s") as caught:
        await client.call("invoice", "list")
    await client.close()
    assert time.monotonic() - started < 2
    assert caught.value.exchange["http_status"] is None and caught.value.exchange["elapsed_ms"] >= 250
    assert_clean(caught.value)


async def test_connection_refused_is_transient(env: Env) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = env.variant(api_url=f"http://127.0.0.1:{port}/api/")
    with pytest.raises(TransientError) as caught:
        await client.call("invoice", "list")
    await client.close()
    assert caught.value.exchange["http_status"] is None and caught.value.exchange["error"]
    assert_clean(caught.value)


@pytest.mark.parametrize("env", ["hostfact"], indirect=True)
async def test_hostfact_write_lock_contention_is_transient(env: Env) -> None:
    # The real lock, not the injected fault: only HostFact serialises API writes.
    env.sim.concurrency_wait = 0.1
    try:
        async with env.sim.write_lock():
            with pytest.raises(TransientError) as caught:
                await env.client.call("invoice", "markaspaid", {"Identifier": 1})
    finally:
        env.sim.concurrency_wait = 5.0
    assert CONCURRENT_CALLS in str(caught.value)


# -- permanent failures and bans -----------------------------------------------------------------------------


async def test_api_errors_are_permanent_with_their_messages(env: Env) -> None:
    # The client asks HostFact for English (its en_EN texts are public); WeFact answers in Dutch.
    english = env.admin.dialect == "hostfact"
    with pytest.raises(PermanentError) as unknown:
        await env.client.show("invoice", identifier=999999)
    invalid = "Invalid identifier for invoice" if english else "Ongeldige identifier voor factuur"
    assert unknown.value.errors == [invalid]

    (paid,) = seed_invoices(env, 1)
    await env.client.call("invoice", "markaspaid", {"Identifier": paid})
    with pytest.raises(PermanentError) as twice:
        await env.client.call("invoice", "markaspaid", {"Identifier": paid})
    already = "The invoice is already paid" if english else "De factuur is al betaald"
    assert twice.value.errors == [already]
    assert already in str(twice.value)
    exchange = twice.value.exchange
    assert exchange["http_status"] == 200 and exchange["params"] == {"Identifier": paid}
    assert already in exchange["response"]
    assert_clean(twice.value)


async def test_auth_errors_are_permanent(env: Env) -> None:
    wrong = env.variant(api_key="some-other-key-123")
    with pytest.raises(PermanentError) as caught:
        await wrong.call("invoice", "list")
    await wrong.close()
    assert caught.value.errors == ["API key is invalid"]

    env.sim.allowed_ips = ["10.0.0.0/8"]
    try:
        with pytest.raises(PermanentError) as refused:
            await env.client.call("invoice", "list")
    finally:
        env.sim.allowed_ips = None
    assert refused.value.errors == ["IP 127.0.0.1 has no access to API"]
    assert_clean(refused.value)


async def test_http_403(env: Env) -> None:
    env.sim.faults.inject("ban_403", times=1)
    expected = BannedError if env.admin.dialect == "wefact" else PermanentError
    with pytest.raises(expected) as caught:
        await env.client.call("invoice", "list")
    assert caught.value.exchange["http_status"] == 403
    assert "firewall" in caught.value.exchange["response"]
    assert_clean(caught.value)


async def test_a_wefact_rate_limit_breach_is_a_ban(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    state = sim.admin("wf-tight")
    state.reset()
    throttle = RecordingThrottle()
    admin = Administration(name="wf-tight", dialect="wefact", api_url=sim.api_url("wf-tight"), api_key=KEY)
    client = ApiClient(admin, session=session, throttle=throttle)
    try:
        # Three calls a minute are allowed; a minute boundary in between allows three more.
        with pytest.raises(BannedError):
            for _ in range(8):
                await client.call("debtor", "list")
        remaining = [limit.remaining_minute for _, limit in throttle.observed]
        assert 0 in remaining and len(throttle.observed) == len(throttle.acquired)
    finally:
        state.reset()


# -- rate limits and the throttle ----------------------------------------------------------------------------


async def test_rate_limit_headers(env: Env) -> None:
    await env.client.call("debtor", "list")
    await env.client.call("debtor", "list")
    if env.admin.dialect == "hostfact":
        assert env.client.rate_limit is None and env.throttle.observed == []
        return
    limit = env.client.rate_limit
    assert limit is not None and limit.remaining_minute is not None and limit.remaining_hour is not None
    assert limit.remaining_minute < 500 and limit.remaining_hour < 5000
    assert limit.reset_minute is not None and time.time() - 1 < limit.reset_minute <= time.time() + 60
    assert limit.reset_hour is not None and limit.reset_hour <= time.time() + 3600
    assert env.throttle.observed[-1] == ("wf", limit)
    assert len(env.throttle.observed) == 2


async def test_the_throttle_is_asked_once_per_request(env: Env) -> None:
    seed_invoices(env, 3)
    await env.client.list("invoice", page_size=1)
    await env.client.show("debtor", identifier=env.debtor)
    env.sim.faults.inject("http_503", times=1)
    with pytest.raises(TransientError):
        await env.client.call("invoice", "list")
    assert env.throttle.acquired == [env.admin.name] * len(env.sim.calls)
    assert len(env.sim.calls) == 5

    env.throttle.refuse = True
    with pytest.raises(RateLimited):
        await env.client.call("invoice", "list")
    assert len(env.sim.calls) == 5


async def test_the_key_never_leaks(env: Env) -> None:
    caught: list[ApiError] = []
    for kind in ("http_500", "html", "empty_body", "lost_answer", "concurrent", "ban_403"):
        env.sim.faults.inject(kind, times=1)
        try:
            await env.client.call("invoice", "list", {"searchfor": "x"})
        except ApiError as exc:
            caught.append(exc)
    for params in ({"Identifier": 999999}, {"Identifier": "x", "Password": "pw-CANARY-31a9"}):
        try:
            await env.client.call("invoice", "show", params)
        except ApiError as exc:
            caught.append(exc)
    assert len(caught) == 8
    for error in caught:
        assert_clean(error)
        # Crash reporters print the locals of every frame in a traceback; the client's frames hold no key.
        frame = error.__traceback__
        while frame is not None:
            if frame.tb_frame.f_code.co_filename == client_module.__file__:
                assert KEY not in repr(frame.tb_frame.f_locals)
            frame = frame.tb_next
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert caught[-1].exchange["params"]["Password"] == "***"
    assert "pw-CANARY" not in json.dumps(caught[-1].exchange)
    assert KEY not in repr(env.client) and KEY not in json.dumps(env.client.last_exchange)


# -- answers no simulated product gives, from a throwaway server ---------------------------------------------


async def _odd(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    case = request.match_info["case"]
    if case == "redirect":
        raise web.HTTPFound("https://elsewhere.example/api/v2/")
    if case == "missing":
        raise web.HTTPNotFound()
    if case == "slow-down":
        return web.Response(status=429, headers={"Retry-After": "7"})
    if case == "no-status":
        return web.json_response({"controller": "invoice", "invoices": []})
    if case == "huge":
        # 2 MiB of a valid envelope, declared up front or streamed without a length.
        rows = [{"Identifier": str(n), "Comment": "x" * 1000} for n in range(2000)]
        return web.json_response({"status": "success", "invoices": rows})
    if case == "huge-chunked":
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b" " * 32 * 1024)
        await response.write_eof()
        return response
    if case == "echo":
        return web.json_response({"status": "error", "errors": ["bad key " + str(form["api_key"])]})
    return web.json_response({"status": "success", "echo": {k: str(v) for k, v in form.items()}})


@pytest.fixture(scope="module")
async def odd_server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{case}", _odd)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


def odd_client(base: str, case: str) -> ApiClient:
    return ApiClient(Administration(name="odd", api_url=f"{base}/{case}", api_key=KEY))


@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("redirect", PermanentError, "redirect to https://elsewhere.example"),
        ("missing", PermanentError, "HTTP 404"),
        ("slow-down", RateLimited, "HTTP 429"),
        ("no-status", TransientError, "not the API envelope"),
        ("echo", PermanentError, r"bad key \*\*\*"),
    ],
)
async def test_odd_answers(odd_server: str, case: str, error: type[ApiError], match: str) -> None:
    async with odd_client(odd_server, case) as client:
        with pytest.raises(error, match=match) as caught:
            await client.call("invoice", "list")
    assert type(caught.value) is error
    assert_clean(caught.value)
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == 7


@pytest.mark.parametrize("case", ["huge", "huge-chunked"])
async def test_an_answer_larger_than_the_cap_is_not_read(odd_server: str, case: str) -> None:
    admin = Administration(
        name="odd", api_url=f"{odd_server}/{case}", api_key=KEY, max_answer_bytes=1024 * 1024
    )
    async with ApiClient(admin) as client:
        with pytest.raises(TransientError, match="over 1048576"):
            await client.call("invoice", "list")


async def test_the_body_the_server_receives(odd_server: str) -> None:
    async with odd_client(odd_server, "ok") as client:
        envelope = await client.call("invoice", "add", {"InvoiceLines": [{"PriceExcl": Decimal("1.50")}]})
        assert envelope["echo"] == {
            "InvoiceLines[0][PriceExcl]": "1.50",
            "controller": "invoice",
            "action": "add",
            "api_key": KEY,
        }
        # Decimals in params become text so the runtime can store the exchange as JSON.
        assert client.last_exchange is not None
        assert client.last_exchange["params"] == {"InvoiceLines": [{"PriceExcl": "1.50"}]}
        assert KEY not in json.dumps(client.last_exchange)


async def test_misuse_is_a_programming_error(odd_server: str) -> None:
    async with odd_client(odd_server, "ok") as client:
        with pytest.raises(ValueError, match="api_key"):
            await client.call("invoice", "list", {"api_key": "other"})
        with pytest.raises(ValueError, match="identifier or a code"):
            await client.show("invoice")
