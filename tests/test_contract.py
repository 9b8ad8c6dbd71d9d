"""Contract tests: answers shaped exactly as the real HostFact 6.0.2 and WeFact print them, fed through the
client and the adapters over real HTTP (a small server that answers what it is given).

The shapes are the ones docs/api-fidelity.md records: HostFact prints amounts as strings but percentages
as PHP floats times 100 (7.000000000000001) and line ids as numbers; WeFact prints prices and quantities
bare; list rows carry neither ReferenceNumber nor AmountPaid; an empty list has no plural key; messages are
Dutch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

from tasks.adapters import PurchaseLedger, SalesLedger, parse_sales_invoice
from tasks.client import ApiClient
from tasks.errors import PermanentError, TransientError
from tasks.invoice import Status
from tasks.model import Administration
from tasks.protocol import Dialect

Answer = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Canned:
    """An API endpoint that answers each call with what ``answer`` makes of its params, and logs them."""

    answer: Answer = lambda params: {"status": "success"}
    seen: list[dict[str, Any]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        params = dict(await request.post())
        self.seen.append(params)
        self.queries.append(request.query_string)
        envelope = {"controller": params.get("controller"), "action": params.get("action")}
        return web.Response(text=json.dumps(envelope | self.answer(params)), content_type="application/json")


@pytest.fixture
async def canned() -> AsyncIterator[Canned]:
    server = Canned()
    app = web.Application()
    app.router.add_post("/api/", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}/api/"
    yield server
    await runner.cleanup()


class NoIds:
    async def get(self, kind: str, source_id: str) -> str | None:
        return None

    async def put(self, kind: str, source_id: str, target_id: str) -> None:
        return None

    async def forget(self, kind: str, source_id: str) -> None:
        return None

    async def add(self, kind: str, source_id: str, member: str) -> None:
        return None

    async def members(self, kind: str, source_id: str) -> set[str]:
        return set()

    async def get_many(self, kind: str, source_ids: list[str]) -> dict[str, str]:
        return {}

    async def members_many(self, kind: str, source_ids: list[str]) -> dict[str, set[str]]:
        return {}


def client_for(canned: Canned, dialect: Dialect) -> ApiClient:
    return ApiClient(Administration(name="t", dialect=dialect, api_url=canned.url, api_key="k" * 32))


# invoice_api_controller::_show_invoice: Identifier a string, amounts DECIMAL strings, percentages FLOAT × 100
# as PHP floats, a line's Identifier a number, Periods an int string, Discount × 100.
HOSTFACT_LINES: list[dict[str, Any]] = [
    {
        "Identifier": 31,
        "Number": "1",
        "Description": "Hosting Basic",
        "PriceExcl": "7.5",
        "DiscountPercentage": 0,
        "TaxPercentage": 7.000000000000001,
        "Periods": "12",
        "Periodic": "m",
        "StartPeriod": "2026-01-01",
        "EndPeriod": "2026-12-31",
    }
]
HOSTFACT_SHOW: dict[str, Any] = {
    "Identifier": "12",
    "InvoiceCode": "F0012",
    "DebtorCode": "DB0001",
    "Status": "3",
    "Date": "2026-01-05",
    "Term": "14",
    "AmountExcl": "90.00",
    "AmountIncl": "96.30",
    "AmountPaid": "10.00",
    "Discount": 10.000000000000002,
    "VatCalcMethod": "excl",
    "ReferenceNumber": "[factsync:hostfact:7]",
    "PayDate": "",
    "InvoiceLines": HOSTFACT_LINES,
}
# wefact.nl/api/facturen/*: bare numbers for prices and quantities, StartDate beside StartPeriod.
WEFACT_SHOW = HOSTFACT_SHOW | {
    "InvoiceLines": [
        {
            "Identifier": "31",
            "Number": 1,
            "Description": "Hosting Basic",
            "PriceExcl": 7.5,
            "DiscountPercentage": 0,
            "TaxCode": "V7",
            "TaxPercentage": 7,
            "Periods": 12,
            "Periodic": "m",
            "StartDate": "2026-01-01",
            "StartPeriod": "",
        }
    ],
    "Discount": 10,
}


@pytest.mark.parametrize("row", [HOSTFACT_SHOW, WEFACT_SHOW], ids=["hostfact", "wefact"])
def test_a_shown_invoice_parses_the_same_in_both_dialects(row: dict[str, Any]) -> None:
    invoice = parse_sales_invoice(row)
    (line,) = invoice.lines
    assert (line.tax_percentage, line.quantity, line.price_excl) == (Decimal(7), Decimal(1), Decimal("7.5"))
    assert (line.periods, line.period_unit, line.start_period) == (12, "m", "2026-01-01")
    assert (invoice.discount, invoice.status, invoice.amount_paid) == (
        Decimal(10),
        Status.PARTLY_PAID,
        Decimal(10),
    )
    assert line.identifier == "31"


def test_a_line_without_a_period_unit_is_one_period_whatever_periods_says() -> None:
    (line_row,) = HOSTFACT_LINES
    row = HOSTFACT_SHOW | {"InvoiceLines": [line_row | {"Periodic": ""}]}
    (line,) = parse_sales_invoice(row).lines
    assert (line.periods, line.start_period) == (1, "")


def test_a_list_row_has_no_reference_and_no_paid_amount() -> None:
    # invoice_api_controller::list_api_action: AmountOpen instead of AmountPaid, no ReferenceNumber or Term.
    row = {
        "Identifier": "12",
        "InvoiceCode": "F0012",
        "DebtorCode": "DB0001",
        "AmountExcl": "90.00",
        "AmountIncl": "96.30",
        "AmountOpen": 86.30000000000001,
        "Date": "2026-01-05",
        "Status": "3",
        "SubStatus": "",
        "Modified": "2026-01-06 10:00:00",
    }
    invoice = parse_sales_invoice(row)
    assert (invoice.reference, invoice.amount_paid, invoice.term) == ("", Decimal(0), 0)


@pytest.mark.parametrize("dialect", ["hostfact", "wefact"])
async def test_an_empty_list_without_its_plural_key_means_none(canned: Canned, dialect: Dialect) -> None:
    # hostfactapi.class.php::parseResponse: if(!empty($data)): no "debtors" key at all.
    canned.answer = lambda params: {"status": "success", "totalresults": 0, "currentresults": 0, "offset": 0}
    async with client_for(canned, dialect) as client:
        ledger = SalesLedger(client, NoIds(), [])
        assert await ledger._debtor_exists("DB0001") is False
        assert await ledger.find("[factsync:hostfact:1]") == (None, None)
        assert await client.list("invoice") == []
    assert canned.seen[0]["searchat"] == "DebtorCode"


async def test_a_debtor_code_search_is_a_substring_match_so_only_an_exact_code_counts(canned: Canned) -> None:
    # LIKE %x%: DB0001 also finds DB00010.
    canned.answer = lambda params: {
        "status": "success",
        "totalresults": 1,
        "debtors": [{"Identifier": "9", "DebtorCode": "DB00010"}],
    }
    async with client_for(canned, "hostfact") as client:
        assert await SalesLedger(client, NoIds(), [])._debtor_exists("DB0001") is False


async def test_hostfact_is_asked_for_english_and_wefact_is_not(canned: Canned) -> None:
    for dialect in ("hostfact", "wefact"):
        async with client_for(canned, dialect) as client:
            await client.call("invoice", "list")
    assert canned.queries == ["language=en_EN", ""]


@pytest.mark.parametrize(
    ("dialect", "message", "kind"),
    [
        # en_EN.php:1250, asked for in English: the lock, worth a retry.
        (
            "hostfact",
            "API has concurrent calls, but the queue was not able to fix them in 5 seconds.",
            TransientError,
        ),
        # The same lock in Dutch would mean the language was not asked for: no text is guessed at.
        ("hostfact", "API heeft gelijktijdige verzoeken", PermanentError),
        ("wefact", "Deelbetaling kon niet worden verwerkt", PermanentError),
    ],
)
async def test_only_the_english_lock_message_is_transient(
    canned: Canned, dialect: Dialect, message: str, kind: type[Exception]
) -> None:
    canned.answer = lambda params: {"status": "error", "errors": [message]}
    async with client_for(canned, dialect) as client:
        with pytest.raises(kind):
            await client.call("invoice", "partpayment", {"Identifier": 1, "AmountPaid": "1"})


async def test_a_gone_mirror_is_told_by_the_marker_search_not_by_the_message(canned: Canned) -> None:
    def answer(params: dict[str, Any]) -> dict[str, Any]:
        if params["action"] == "show" and params["Identifier"] == "404":
            return {"status": "error", "errors": ["Ongeldige identifier voor factuur"]}
        if params["action"] == "show":
            return {"status": "success", "invoice": HOSTFACT_SHOW}
        return {"status": "success", "totalresults": 1, "invoices": [{"Identifier": "12", "Status": "3"}]}

    canned.answer = answer
    async with client_for(canned, "wefact") as client:
        mirror, credit = await SalesLedger(client, NoIds(), []).locate("404", "[factsync:hostfact:7]")
    assert mirror is not None and (mirror.id, credit) == ("12", None)
    assert [p["action"] for p in canned.seen] == ["show", "list", "show"]


async def test_a_marker_search_that_is_refused_too_fails_the_sync(canned: Canned) -> None:
    canned.answer = lambda params: {"status": "error", "errors": ["API key is invalid"]}
    async with client_for(canned, "hostfact") as client:
        with pytest.raises(PermanentError):
            await SalesLedger(client, NoIds(), []).locate("404", "[factsync:hostfact:7]")


async def test_wefact_purchase_lines_are_sent_as_wefact_takes_them(canned: Canned) -> None:
    # wefact.nl/api/inkoopfacturen/toevoegen: Description, PriceExcl, TaxCode; the marker in Comment.
    canned.answer = lambda params: {"status": "error", "errors": ["Ongeldige identifier voor crediteur"]}
    source = parse_sales_invoice(HOSTFACT_SHOW | {"InvoiceLines": [{"Number": "3", "PriceExcl": "12.5"}]})
    async with client_for(canned, "wefact") as client:
        ledger = PurchaseLedger(client, NoIds(), [], creditor="CD0001")
        with pytest.raises(PermanentError):
            await ledger._create(ledger.represent(source), "[factsync:hostfact:7]")
    sent = canned.seen[0]
    assert sent["Comment"] == "[factsync:hostfact:7]" and "ReferenceNumber" not in sent
    assert (sent["InvoiceLines[0][PriceExcl]"], sent["InvoiceLines[0][TaxCode]"]) == ("37.50", "I0")
    assert "InvoiceLines[0][Number]" not in sent and "InvoiceLines[0][TaxPercentage]" not in sent
