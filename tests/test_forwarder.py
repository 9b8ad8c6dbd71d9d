"""The HostFact forwarder (deploy/hostfact): hooks.php and resend.php run by php-cli, delivering to a receiver
that verifies every request with `standardwebhooks`, as the factsync listener does.

php-cli runs with an old php.ini's serialize_precision (17) and every warning shown on stderr, so the tests
see what a sloppy HostFact server would do to the forwarder.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import functools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tasks.hooks import HOOKS, CreditLink, parse_hook

ROOT = Path(__file__).resolve().parent.parent
HOSTFACT_DIR = ROOT / "deploy" / "hostfact"
FIRE = ROOT / "tests" / "php" / "fire.php"
LINT74 = ROOT / "tests" / "php" / "lint74.php"
RESEND = HOSTFACT_DIR / "resend.php"
PHP_FLAGS = ("-d", "display_errors=stderr", "-d", "error_reporting=-1", "-d", "serialize_precision=17")
PHP_COMPLAINTS = re.compile(r"\b(Warning|Notice|Deprecated|Fatal error|Parse error)\b")
SPOOL_NAME = re.compile(r"^\d{10}\.\d{6}-(msg_[0-9a-f]{32})\.json$")

# One payload per hook of shared/seeds/hostfact-webhooks-invoices.txt, with the value types HostFact uses:
# ids as ints or strings, viaMail/viaPost bools, amounts floats (a whole one, and -0.35, which
# serialize_precision=17 would write as -0.34999999999999998).
SEED_PARAMS: dict[str, dict[str, Any]] = {
    "invoice_is_created": {"id": 101, "Debtor": 7, "InvoiceCode": "F2024/0001"},
    "invoice_is_edited": {"id": "101", "Debtor": "7", "InvoiceCode": "F2024/0001"},
    "invoice_is_sent": {
        "id": 101,
        "Debtor": 7,
        "InvoiceCode": "F2024/0001",
        "viaMail": True,
        "viaPost": False,
        "Sent": 1,
        "Reminders": 0,
        "Summations": 0,
    },
    "invoice_reminder_is_sent": {
        "id": "101",
        "Debtor": 7,
        "InvoiceCode": "F2024/0001",
        "viaMail": True,
        "viaPost": True,
        "Sent": 1,
        "Reminders": 1,
        "Summations": 0,
    },
    "invoice_summation_is_sent": {
        "id": 101,
        "Debtor": 7,
        "InvoiceCode": "F2024/0001",
        "viaMail": False,
        "viaPost": True,
        "Sent": 1,
        "Reminders": 2,
        "Summations": 1,
    },
    "invoice_is_partly_paid": {
        "id": 101,
        "Debtor": 7,
        "InvoiceCode": "F2024/0001",
        "AmountPaidNow": 12.1,
        "AmountPaidTotal": 50.0,
        "AmountOpen": -0.35,
    },
    "invoice_is_paid": {"id": 101, "Debtor": 7, "InvoiceCode": "F2024/0001"},
    "invoice_is_unpaid": {"id": "101", "Debtor": "7", "InvoiceCode": "F2024/0001"},
    "invoice_is_credited": {
        "id": 101,
        "Debtor": 7,
        "InvoiceCode": "F2024/0001",
        "CreditInvoiceID": 102,
        "CreditInvoiceCode": "CF2024/0001 Ünïcode",
    },
}
PAID = SEED_PARAMS["invoice_is_paid"]


@functools.cache
def php_binary() -> str:
    php = shutil.which("php")
    if php is None:
        pytest.fail(
            "php-cli is not on PATH; the forwarder tests need it: apt-get install -y php-cli php-curl",
            pytrace=False,
        )
    return php


@functools.cache
def php_has_curl() -> bool:
    modules = subprocess.run([php_binary(), "-m"], capture_output=True, text=True, check=True).stdout
    return "curl" in modules.split()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class Attempt:
    headers: dict[str, str]
    body: str
    payload: Any
    status: int


@dataclass
class Receiver:
    """Verifies like the listener; answers each attempt with the next of `statuses`, then `default_status`."""

    secret: str
    url: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    default_status: int = 202

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        headers = dict(request.headers)
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            self.unverified.append(str(exc))
            return web.json_response({"error": str(exc)}, status=401)
        status = self.statuses.pop(0) if self.statuses else self.default_status
        self.attempts.append(Attempt(headers, body, payload, status))
        extra = {"Location": "/elsewhere"} if 300 <= status < 400 else None
        return web.json_response({"status": status}, status=status, headers=extra)

    @property
    def delivered(self) -> list[Attempt]:
        return [a for a in self.attempts if 200 <= a.status < 300]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(secret=new_secret())
    app = web.Application()
    app.router.add_post("/hooks/hostfact", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/hooks/hostfact"
    yield rec
    assert not rec.unverified, f"requests that failed verification: {rec.unverified}"
    await runner.cleanup()


def closed_port_url() -> str:
    """A URL nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/hostfact"


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A listener that accepts the connection (the kernel does, into the backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/hostfact"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds the lock resend.php takes, as a slow run would."""
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float


@dataclass
class Forwarder:
    """hooks.php and resend.php, configured through the environment unless `in_env` is false."""

    url: str
    secret: str
    spool: Path
    transport: str = "auto"
    in_env: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACTSYNC_")}
        if self.in_env:
            env |= {"FACTSYNC_URL": self.url, "FACTSYNC_SECRET": self.secret}
            env |= {"FACTSYNC_SPOOL_DIR": str(self.spool), "FACTSYNC_TRANSPORT": self.transport}
        return env | self.extra_env

    async def php(self, *args: str) -> Run:
        # Checked here, in the test's own body, so a missing php fails the tests rather than erroring them.
        php = php_binary()
        if self.transport == "curl" and not php_has_curl():
            pytest.fail("php has no curl extension; install it: apt-get install -y php-curl", pytrace=False)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            php,
            *PHP_FLAGS,
            *args,
            env=self.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=15)
        run = Run(proc.returncode or 0, stdout.decode(), stderr.decode(), time.monotonic() - started)
        assert not PHP_COMPLAINTS.search(run.stderr), run.stderr
        return run

    async def fire(self, *hooks: tuple[str, dict[str, Any]]) -> Run:
        """Fires the hooks in one PHP process, as one HostFact request would."""
        args = [arg for action, params in hooks for arg in (action, json.dumps(params))]
        run = await self.php(str(FIRE), *args)
        # A hook returns normally and prints nothing into HostFact's page, whatever happened to the delivery.
        assert (run.returncode, run.stdout) == (0, ""), run
        return run

    async def resend(self) -> Run:
        return await self.php(str(RESEND))

    def spooled(self) -> list[dict[str, Any]]:
        """The spool's deliveries, oldest first, each with its file name under "file"."""
        if not self.spool.exists():
            return []
        records = []
        for path in sorted(self.spool.glob("*.json")):
            assert SPOOL_NAME.match(path.name), path.name
            records.append({**json.loads(path.read_text()), "file": path.name})
        return records


@pytest.fixture(params=["curl", "stream"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def forwarder(receiver: Receiver, tmp_path: Path, transport: str) -> Forwarder:
    return Forwarder(url=receiver.url, secret=receiver.secret, spool=tmp_path / "spool", transport=transport)


@pytest.fixture
def curl_forwarder(receiver: Receiver, tmp_path: Path) -> Forwarder:
    """For behaviour that does not depend on the transport."""
    return Forwarder(url=receiver.url, secret=receiver.secret, spool=tmp_path / "spool", transport="curl")


def canonical(value: Any) -> str:
    """JSON text that tells 1, "1", 1.0 and true apart (Python's == does not)."""
    return json.dumps(value, sort_keys=True)


def assert_standard_headers(attempt: Attempt) -> None:
    assert attempt.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"msg_[0-9a-f]{32}", attempt.headers["webhook-id"])
    assert abs(int(attempt.headers["webhook-timestamp"]) - time.time()) < 10
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", attempt.headers["webhook-signature"])


async def test_every_seed_hook_is_registered_and_known_to_the_listener(curl_forwarder: Forwarder) -> None:
    run = await curl_forwarder.php(str(FIRE), "--list")
    registered = dict(line.split(" ") for line in run.stdout.splitlines())
    assert registered == {action: f"factsync_hook_{action}" for action in SEED_PARAMS}
    assert set(HOOKS) == set(SEED_PARAMS)


async def test_every_seed_hook_is_delivered_signed_and_unchanged(
    forwarder: Forwarder, receiver: Receiver
) -> None:
    await forwarder.fire(*SEED_PARAMS.items())

    assert [a.payload["action"] for a in receiver.delivered] == list(SEED_PARAMS)
    for attempt, (action, params) in zip(receiver.delivered, SEED_PARAMS.items(), strict=True):
        assert canonical(attempt.payload) == canonical({"action": action, "data": params})
        assert_standard_headers(attempt)
        assert parse_hook(action, attempt.payload["data"]) is not None
    assert len({a.headers["webhook-id"] for a in receiver.delivered}) == len(SEED_PARAMS)
    partly_paid = receiver.delivered[list(SEED_PARAMS).index("invoice_is_partly_paid")].body
    # Floats as PHP has them, whatever php.ini's serialize_precision; slashes and non-ASCII left alone.
    assert '"AmountPaidNow":12.1,"AmountPaidTotal":50.0,"AmountOpen":-0.35' in partly_paid
    assert '"InvoiceCode":"F2024/0001"' in partly_paid
    assert "CF2024/0001 Ünïcode" in receiver.delivered[-1].body
    assert forwarder.spooled() == []


async def test_a_5xx_answer_spools_the_delivery_without_its_signature(
    forwarder: Forwarder, receiver: Receiver
) -> None:
    receiver.statuses = [503]
    run = await forwarder.fire(("invoice_is_paid", PAID))

    [attempt] = receiver.attempts
    [record] = forwarder.spooled()
    assert set(record) == {"format", "id", "first_attempt", "action", "body", "file"}
    assert record["id"] == attempt.headers["webhook-id"]
    assert record["file"].endswith(f"-{record['id']}.json")
    assert record["action"] == "invoice_is_paid"
    assert record["body"] == attempt.body
    assert abs(record["first_attempt"] - time.time()) < 10
    assert forwarder.spool.stat().st_mode & 0o777 == 0o700
    assert "spooled" in run.stderr

    key = forwarder.secret.removeprefix("whsec_")
    for text in [*(p.read_text() for p in forwarder.spool.iterdir() if p.is_file()), run.stderr]:
        assert key not in text
        assert attempt.headers["webhook-signature"].split(",")[1] not in text


@pytest.mark.parametrize(
    ("status", "spooled"),
    [
        (400, False),
        (409, False),
        (422, False),
        (302, True),
        (401, True),
        (403, True),
        (404, True),
        (408, True),
        (429, True),
        (500, True),
        (502, True),
    ],
)
async def test_which_answers_spool(
    curl_forwarder: Forwarder, receiver: Receiver, status: int, spooled: bool
) -> None:
    """A 4xx refuses this delivery for good, unless it says the listener or its configuration is not ready."""
    receiver.statuses = [status]
    run = await curl_forwarder.fire(("invoice_is_paid", PAID))
    assert len(curl_forwarder.spooled()) == int(spooled)
    if not spooled:
        assert f"refused by the listener (HTTP {status})" in run.stderr


async def test_a_4xx_refusal_is_logged_and_not_spooled(forwarder: Forwarder, receiver: Receiver) -> None:
    receiver.statuses = [400]
    run = await forwarder.fire(("invoice_is_paid", PAID))
    assert len(receiver.attempts) == 1
    assert forwarder.spooled() == []
    assert "refused by the listener (HTTP 400)" in run.stderr


async def test_listener_down_spools_at_once(forwarder: Forwarder) -> None:
    forwarder.url = closed_port_url()
    run = await forwarder.fire(("invoice_is_paid", PAID))
    assert run.elapsed < 1.5
    [record] = forwarder.spooled()
    assert json.loads(record["body"]) == {"action": "invoice_is_paid", "data": PAID}


@pytest.mark.slow
async def test_a_hanging_listener_costs_one_request_about_two_seconds(
    forwarder: Forwarder, hanging_url: str
) -> None:
    """The timeout bounds the hook; once the listener failed, later hooks of the same request go straight to
    the spool instead of waiting again."""
    forwarder.url = hanging_url
    hooks = [("invoice_is_partly_paid", SEED_PARAMS["invoice_is_partly_paid"]), ("invoice_is_paid", PAID)]
    run = await forwarder.fire(*hooks, ("invoice_is_sent", SEED_PARAMS["invoice_is_sent"]))
    assert 1.5 < run.elapsed < 3.5
    assert [r["action"] for r in forwarder.spooled()] == [
        "invoice_is_partly_paid",
        "invoice_is_paid",
        "invoice_is_sent",
    ]


async def test_resend_sends_oldest_first_with_original_ids_and_fresh_signatures(
    forwarder: Forwarder, receiver: Receiver
) -> None:
    # One delivery that waited an hour, far past the listener's 5 minute tolerance for timestamps...
    forwarder.spool.mkdir(mode=0o700)
    old_id = "msg_" + "0" * 32
    old_body = json.dumps({"action": "invoice_is_created", "data": SEED_PARAMS["invoice_is_created"]})
    old = {"format": 1, "id": old_id, "first_attempt": int(time.time()) - 3600}
    old |= {"action": "invoice_is_created", "body": old_body}
    (forwarder.spool / f"{int(time.time()) - 3600:010d}.000000-{old_id}.json").write_text(json.dumps(old))
    # ...and three from one request that met a failing listener.
    receiver.statuses = [503]
    hooks = [(action, SEED_PARAMS[action]) for action in ("invoice_is_sent", "invoice_is_partly_paid")]
    await forwarder.fire(*hooks, ("invoice_is_paid", PAID))
    spooled = forwarder.spooled()
    assert spooled[0]["id"] == old_id
    assert spooled[1]["id"] == receiver.attempts[0].headers["webhook-id"]

    run = await forwarder.resend()

    assert (run.returncode, run.stdout) == (0, "factsync resend: sent 4, kept 0, dropped 0\n"), run
    resent = receiver.attempts[1:]
    assert [a.headers["webhook-id"] for a in resent] == [r["id"] for r in spooled]
    assert [a.body for a in resent] == [r["body"] for r in spooled]
    for attempt in resent:
        assert_standard_headers(attempt)
    assert forwarder.spooled() == []


async def test_resend_stops_at_the_first_failure_and_keeps_the_order(
    forwarder: Forwarder, receiver: Receiver
) -> None:
    receiver.statuses = [503]
    actions = ["invoice_is_created", "invoice_is_sent", "invoice_is_paid"]
    await forwarder.fire(*((action, SEED_PARAMS[action]) for action in actions))
    spooled = forwarder.spooled()
    assert [r["action"] for r in spooled] == actions

    receiver.statuses = [202, 503]
    run = await forwarder.resend()
    assert (run.returncode, run.stdout) == (1, "factsync resend: sent 1, kept 2, dropped 0\n"), run
    assert f"stopped at {spooled[1]['file']}" in run.stderr
    assert len(receiver.attempts) == 3  # the first hook, then two resends: the third file was not tried
    assert forwarder.spooled() == spooled[1:]

    run = await forwarder.resend()
    assert (run.returncode, run.stdout) == (0, "factsync resend: sent 2, kept 0, dropped 0\n"), run
    assert [a.headers["webhook-id"] for a in receiver.delivered] == [r["id"] for r in spooled]
    assert forwarder.spooled() == []


async def test_resend_drops_a_refused_delivery_and_sets_aside_an_unreadable_file(
    curl_forwarder: Forwarder, receiver: Receiver
) -> None:
    receiver.statuses = [503]
    await curl_forwarder.fire(
        ("invoice_is_created", SEED_PARAMS["invoice_is_created"]), ("invoice_is_paid", PAID)
    )
    garbage = curl_forwarder.spool / f"{int(time.time()) + 1:010d}.000000-msg_{'f' * 32}.json"
    garbage.write_text("{not json")

    receiver.statuses = [400]
    run = await curl_forwarder.resend()

    assert (run.returncode, run.stdout) == (0, "factsync resend: sent 1, kept 0, dropped 2\n"), run
    assert "refused by the listener (HTTP 400)" in run.stderr
    assert f"{garbage.name} is not a spooled delivery" in run.stderr
    assert garbage.with_name(garbage.name + ".bad").exists()
    assert not list(curl_forwarder.spool.glob("*.json"))


async def test_resend_leaves_the_spool_to_a_run_holding_the_lock(
    curl_forwarder: Forwarder, receiver: Receiver
) -> None:
    receiver.statuses = [503]
    await curl_forwarder.fire(("invoice_is_paid", PAID))
    with locked(curl_forwarder.spool / ".lock"):
        run = await curl_forwarder.resend()
    assert run.returncode == 0
    assert "another run holds the lock" in run.stderr
    assert len(receiver.attempts) == 1
    assert len(curl_forwarder.spooled()) == 1


async def test_resend_with_nothing_spooled(curl_forwarder: Forwarder) -> None:
    run = await curl_forwarder.resend()
    assert (run.returncode, run.stdout, run.stderr) == (0, "factsync resend: sent 0, kept 0, dropped 0\n", "")
    assert not curl_forwarder.spool.exists()


async def test_configuration_file_and_environment_override(receiver: Receiver, tmp_path: Path) -> None:
    install = tmp_path / "Pro" / "includes"
    shutil.copytree(HOSTFACT_DIR, install)
    spool = tmp_path / "spool-from-file"
    (install / "factsync-config.php").write_text(
        "<?php\nreturn array("
        f"'url' => {json.dumps(receiver.url)}, 'secret' => {json.dumps(receiver.secret)}, "
        f"'spool_dir' => {json.dumps(str(spool))}, 'timeout' => 2.0);\n"
    )
    forwarder = Forwarder(url=receiver.url, secret=receiver.secret, spool=spool, in_env=False)
    forwarder.extra_env = {"FACTSYNC_HOOKS_PHP": str(install / "hooks.php")}

    await forwarder.fire(("invoice_is_paid", PAID))
    assert len(receiver.delivered) == 1

    forwarder.extra_env["FACTSYNC_URL"] = closed_port_url()  # the environment wins over the file
    await forwarder.fire(("invoice_is_paid", PAID))
    assert len(receiver.delivered) == 1
    assert len(forwarder.spooled()) == 1


async def test_example_configuration_names_every_setting(curl_forwarder: Forwarder) -> None:
    code = (
        "$example = include $argv[1]; require $argv[2];"
        "echo json_encode(array(array_keys($example), array_keys(factsync_config())));"
    )
    run = await curl_forwarder.php(
        "-r", code, str(HOSTFACT_DIR / "factsync-config.example.php"), str(HOSTFACT_DIR / "hooks.php")
    )
    example_keys, config_keys = json.loads(run.stdout)
    assert example_keys == config_keys


async def test_hooks_php_can_be_included_twice_inside_and_outside_hostfact(
    curl_forwarder: Forwarder, receiver: Receiver
) -> None:
    hooks = json.dumps(str(HOSTFACT_DIR / "hooks.php"))
    stub = json.dumps(str(ROOT / "tests" / "php" / "hostfact_stub.php"))
    outside = f"include {hooks}; include {hooks}; factsync_hook_invoice_is_paid(array('id' => 5));"
    run = await curl_forwarder.php("-r", outside)
    assert (run.returncode, run.stdout) == (0, "")
    assert [a.payload for a in receiver.delivered] == [{"action": "invoice_is_paid", "data": {"id": 5}}]

    inside = (
        f"require {stub}; include {hooks}; include {hooks};"
        "echo json_encode(array_map('count', $GLOBALS['hostfact_actions']));"
    )
    run = await curl_forwarder.php("-r", inside)
    assert json.loads(run.stdout) == dict.fromkeys(SEED_PARAMS, 1)


async def test_a_hook_survives_what_would_otherwise_break_the_request(
    curl_forwarder: Forwarder, receiver: Receiver, tmp_path: Path
) -> None:
    # No secret: nothing can be signed, so the delivery waits in the spool.
    curl_forwarder.secret = ""
    run = await curl_forwarder.fire(("invoice_is_paid", PAID))
    assert "no valid secret configured" in run.stderr
    assert len(curl_forwarder.spooled()) == 1
    assert receiver.attempts == []

    # Listener down and a spool directory that cannot be created: the delivery ends up in the error log.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    curl_forwarder.url = closed_port_url()
    curl_forwarder.spool = blocker / "spool"
    run = await curl_forwarder.fire(("invoice_is_paid", PAID))
    assert "could not spool" in run.stderr
    assert '"InvoiceCode":"F2024/0001"' in run.stderr


async def test_forwarder_uses_no_syntax_newer_than_php_7_4(curl_forwarder: Forwarder) -> None:
    files = [*HOSTFACT_DIR.glob("*.php"), *(ROOT / "tests" / "php").glob("*.php")]
    run = await curl_forwarder.php(str(LINT74), *map(str, files))
    assert (run.returncode, run.stdout) == (0, ""), run.stdout


# A credit invoice (id 2) of invoice 1, as HostFact's invoice::add() announces it.
CREDIT_CREATED = {"id": 2, "Debtor": 7, "InvoiceCode": "CF2024/0001"}
ORIGINAL_PAID = {"id": 1, "Debtor": 7, "InvoiceCode": "F2024/0001"}


def with_invoices(forwarder: Forwarder, rows: dict[str, dict[str, str]]) -> Forwarder:
    """Inside HostFact: the stub's Database_Model holds these HostFact_Invoice rows, by id."""
    forwarder.extra_env["FACTSYNC_TEST_INVOICES"] = json.dumps(rows)
    return forwarder


def credit_rows(original_status: str) -> dict[str, dict[str, str]]:
    return {
        "1": {"Status": original_status, "CorrespondingInvoice": "0"},
        "2": {"Status": "8", "CorrespondingInvoice": "1"},
    }


@pytest.mark.parametrize(("original_status", "expected"), [("2", 2), ("9", 9)], ids=["partial", "full"])
async def test_a_credit_invoices_created_hook_carries_its_original_and_that_status(
    forwarder: Forwarder, receiver: Receiver, original_status: str, expected: int
) -> None:
    """A full credit sets the original to 9 before it adds the credit invoice; a partial one changes it only
    after, so the Status read at hook time tells the two apart."""
    await with_invoices(forwarder, credit_rows(original_status)).fire(("invoice_is_created", CREDIT_CREATED))

    [attempt] = receiver.delivered
    data = CREDIT_CREATED | {"CorrespondingInvoice": 1, "CorrespondingInvoiceStatus": expected}
    assert canonical(attempt.payload) == canonical({"action": "invoice_is_created", "data": data})
    assert_standard_headers(attempt)
    hook = parse_hook("invoice_is_created", attempt.payload["data"])
    assert isinstance(hook, CreditLink)
    assert (hook.CorrespondingInvoice, hook.CorrespondingInvoiceStatus, hook.document_id) == (1, expected, 1)
    assert forwarder.spooled() == []


async def test_a_credit_invoices_created_hook_leaves_at_the_end_of_the_request(
    curl_forwarder: Forwarder, receiver: Receiver
) -> None:
    """A partial credit that settles the original: HostFact fires invoice_is_paid after invoice_is_created,
    once the credit invoice is committed, and the listener gets them in the order it can act on them."""
    with_invoices(curl_forwarder, credit_rows("2"))
    await curl_forwarder.fire(("invoice_is_created", CREDIT_CREATED), ("invoice_is_paid", ORIGINAL_PAID))

    assert [a.payload["action"] for a in receiver.delivered] == ["invoice_is_paid", "invoice_is_created"]
    assert receiver.delivered[0].payload["data"] == ORIGINAL_PAID
    assert receiver.delivered[1].payload["data"]["CorrespondingInvoiceStatus"] == 2


async def test_a_credit_invoice_whose_original_is_not_found_carries_the_link_only(
    curl_forwarder: Forwarder, receiver: Receiver
) -> None:
    rows = {"2": {"Status": "8", "CorrespondingInvoice": "1"}}
    await with_invoices(curl_forwarder, rows).fire(("invoice_is_created", CREDIT_CREATED))
    [attempt] = receiver.delivered
    assert canonical(attempt.payload["data"]) == canonical(CREDIT_CREATED | {"CorrespondingInvoice": 1})


async def test_a_credit_invoices_created_hook_is_spooled_at_the_end_when_the_listener_fails(
    curl_forwarder: Forwarder, receiver: Receiver
) -> None:
    receiver.statuses = [503]
    await with_invoices(curl_forwarder, credit_rows("2")).fire(("invoice_is_created", CREDIT_CREATED))
    [attempt] = receiver.attempts
    [record] = curl_forwarder.spooled()
    assert (record["id"], record["body"]) == (attempt.headers["webhook-id"], attempt.body)
    assert json.loads(record["body"])["data"]["CorrespondingInvoice"] == 1


@pytest.mark.parametrize(
    "rows",
    [
        {"101": {"Status": "2", "CorrespondingInvoice": "0"}},
        {"101": {"Status": "8", "CorrespondingInvoice": "0"}},
        {},
        None,
    ],
    ids=["ordinary-invoice", "credit-without-original", "row-not-found", "outside-hostfact"],
)
async def test_any_other_created_hook_is_forwarded_unchanged_and_at_once(
    curl_forwarder: Forwarder, receiver: Receiver, rows: dict[str, dict[str, str]] | None
) -> None:
    if rows is not None:
        with_invoices(curl_forwarder, rows)
    created = SEED_PARAMS["invoice_is_created"]
    run = await curl_forwarder.fire(("invoice_is_created", created), ("invoice_is_paid", PAID))

    assert [canonical(a.payload) for a in receiver.delivered] == [
        canonical({"action": "invoice_is_created", "data": created}),
        canonical({"action": "invoice_is_paid", "data": PAID}),
    ]
    assert run.stderr == ""


@pytest.mark.parametrize(
    "rows",
    [
        {"2": {"Status": "throw", "CorrespondingInvoice": "1"}},
        {"1": {"Status": "throw"}, "2": {"Status": "8", "CorrespondingInvoice": "1"}},
    ],
    ids=["credit-row", "original-row"],
)
async def test_a_failing_database_read_forwards_the_created_hook_unchanged_and_at_once(
    curl_forwarder: Forwarder, receiver: Receiver, rows: dict[str, dict[str, str]]
) -> None:
    # fire() also asserts exit status 0, nothing printed and no PHP warning: the Error stays inside the hook.
    run = await with_invoices(curl_forwarder, rows).fire(
        ("invoice_is_created", CREDIT_CREATED), ("invoice_is_paid", ORIGINAL_PAID)
    )

    assert [canonical(a.payload) for a in receiver.delivered] == [
        canonical({"action": "invoice_is_created", "data": CREDIT_CREATED}),
        canonical({"action": "invoice_is_paid", "data": ORIGINAL_PAID}),
    ]
    assert "HostFact_Invoice.Status cannot be read" in run.stderr
