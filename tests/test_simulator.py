"""The HostFact/WeFact simulator over real HTTP: seed examples, statuses, messages, faults, limits, hooks."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from tasks.protocol import encode_form
from tasks.simulator import (
    ApiFailure,
    FaultKind,
    FaultRule,
    RunningSimulator,
    SimAdministration,
    run_simulator,
)

SECRET = "whsec_" + base64.b64encode(b"factsync-simulator-test-secret!!").decode()
HF_KEY = "hf-key"
WF_KEY = "wf-key"
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")

SEED_HF_LINES = [
    {"Description": "Setupfee", "PriceExcl": 150, "TaxPercentage": 21},
    {"ProductCode": "P003", "Description": "Domain example.com", "PriceExcl": 15, "TaxPercentage": 21},
]
SEED_WF_LINES = [
    {
        "ProductCode": "P0001",
        "Description": "Werkzaamheden gebaseerd op uurtarief",
        "Number": 2,
        "PriceExcl": 100,
    },
    {
        "ProductCode": "P0002",
        "Description": "Reiskosten à € 0,19 per km",
        "Number": 155,
        "NumberSuffix": "km",
        "PriceExcl": "0.19",
    },
    {"ProductCode": "P0002", "Description": "Reiskosten à € 0,19 per km", "Number": 1, "PriceExcl": "0.19"},
]


class Api:
    """One administration's endpoint, called the way factsync's client calls it."""

    def __init__(self, session: aiohttp.ClientSession, url: str, key: str) -> None:
        self.session, self.url, self.key = session, url, key

    async def call(self, controller: str, action: str, **params: Any) -> dict[str, Any]:
        """A form-encoded (PHP brackets) call; asserts the HTTP 200 + JSON envelope."""
        body = {"api_key": self.key, "controller": controller, "action": action, **params}
        async with self.session.post(self.url, data=encode_form(body)) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            envelope: dict[str, Any] = await response.json()
        assert envelope["controller"] in (controller.lower(), "invalid")
        assert ISO_DATE.match(envelope["date"])
        return envelope

    async def json_call(self, controller: str, action: str, **params: Any) -> dict[str, Any]:
        """A raw JSON body without a JSON content type, as some clients send it."""
        body = {"api_key": self.key, "controller": controller, "action": action, **params}
        async with self.session.post(self.url, data=json.dumps(body).encode()) as response:
            assert response.status == 200
            envelope: dict[str, Any] = await response.json()
        return envelope

    async def raw(self, controller: str, action: str, **params: Any) -> tuple[int, dict[str, str], str]:
        body = {"api_key": self.key, "controller": controller, "action": action, **params}
        async with self.session.post(self.url, data=encode_form(body)) as response:
            return response.status, dict(response.headers), await response.text()

    async def ok(self, controller: str, action: str, **params: Any) -> dict[str, Any]:
        envelope = await self.call(controller, action, **params)
        assert envelope["status"] == "success", envelope
        return envelope

    async def error(self, controller: str, action: str, **params: Any) -> list[str]:
        envelope = await self.call(controller, action, **params)
        assert envelope["status"] == "error", envelope
        assert set(envelope) == {"controller", "action", "status", "date", "errors"}
        errors: list[str] = envelope["errors"]
        return errors


class Receiver:
    """A hook listener that verifies each Standard Webhooks signature and keeps the payloads."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 202
        self.on_hook: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        headers = dict(request.headers)
        payload = Webhook(SECRET).verify(body, headers)
        assert request.content_type == "application/json"
        assert headers["webhook-id"].startswith("msg_")
        self.payloads.append(payload)
        self.headers.append(headers)
        if self.on_hook is not None:
            await self.on_hook(payload)
        return web.Response(status=self.status)

    def actions(self) -> list[str]:
        return [p["action"] for p in self.payloads]


@asynccontextmanager
async def serve_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/source", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/source"
    try:
        yield receiver
    finally:
        await runner.cleanup()
        sock.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    admins = [
        SimAdministration("source", "hostfact", HF_KEY),
        SimAdministration("target", "wefact", WF_KEY),
    ]
    async with run_simulator(admins) as running:
        yield running


@pytest.fixture
def hf(sim: RunningSimulator, session: aiohttp.ClientSession) -> Api:
    # HostFact answers in Dutch unless asked (Pro/config.php); these tests pin its public en_EN texts.
    return Api(session, sim.api_url("source") + "?language=en_EN", HF_KEY)


@pytest.fixture
def wf(sim: RunningSimulator, session: aiohttp.ClientSession) -> Api:
    return Api(session, sim.api_url("target"), WF_KEY)


def seed_company_x(admin: SimAdministration) -> dict[str, Any]:
    return admin.add_debtor(
        CompanyName="Company X",
        Initials="John",
        SurName="Jackson",
        Address="Keizersgracht 100",
        ZipCode="1015 AA",
        City="Amsterdam",
        EmailAddress="info@company.com",
        TaxNumber="NL123456789B01",
    )


async def sent_invoice(api: Api, lines: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    envelope = await api.ok(
        "invoice", "add", DebtorCode="DB0001", Status=2, InvoiceLines=lines or SEED_HF_LINES, **extra
    )
    invoice: dict[str, Any] = envelope["invoice"]
    return invoice


# -- the seed examples ---------------------------------------------------------------------------------------


async def test_seed_hostfact_partpayment(sim: RunningSimulator, hf: Api) -> None:
    seed_company_x(sim.admin("source"))
    invoice = await sent_invoice(hf, Date="2018-01-11")
    assert (invoice["AmountExcl"], invoice["AmountTax"], invoice["AmountIncl"]) == (
        "165.00",
        "34.65",
        "199.65",
    )
    assert invoice["InvoiceCode"] == "F0001" and invoice["PayBefore"] == "2018-01-25"
    assert invoice["UsedTaxrates"] == {
        "0.21": {"AmountExcl": "165", "AmountTax": "34.65", "AmountIncl": "199.65"}
    }

    envelope = await hf.ok("invoice", "partpayment", Identifier=invoice["Identifier"], AmountPaid=5.25)
    assert envelope["success"] == ["The partly payment of invoice F0001 has been processed."]
    paid = envelope["invoice"]
    assert paid["Status"] == "3" and paid["AmountPaid"] == "5.25" and paid["AmountIncl"] == "199.65"
    assert paid["CompanyName"] == "Company X" and paid["DebtorCode"] == "DB0001"
    assert (
        paid["InvoiceLines"][0]["PriceExcl"] == "150"
        and paid["InvoiceLines"][0]["NoDiscountAmountIncl"] == "181.5"
    )
    # HostFact's show has no open amount; its list rows do.
    assert "AmountOpen" not in paid and "AmountOutstanding" not in paid
    rows = (await hf.ok("invoice", "list"))["invoices"]
    assert rows[0]["AmountOpen"] == "194.40" and rows[0]["Status"] == "3"
    stored = sim.admin("source").invoice_by_code("F0001")
    assert stored["AmountPaid"] == Decimal("5.25") and stored["Status"] == 3


async def test_seed_wefact_partpayment_with_payment_method(sim: RunningSimulator, wf: Api) -> None:
    sim.admin("target").add_debtor(CompanyName="Jan Janssen B.V.", Initials="Jan", SurName="Janssen")
    invoice = await sent_invoice(wf, SEED_WF_LINES)
    assert (invoice["AmountExcl"], invoice["AmountTax"], invoice["AmountIncl"]) == (
        "229.64",
        "48.22",
        "277.86",
    )
    assert [line["TaxCode"] for line in invoice["InvoiceLines"]] == ["V21", "V21", "V21"]
    assert (
        invoice["InvoiceLines"][1]["TaxPercentage"] == "21" and invoice["InvoiceLines"][1]["Number"] == "155"
    )

    envelope = await wf.json_call(
        "invoice", "partpayment", InvoiceCode="F0001", AmountPaid=25, PaymentMethod="wire"
    )
    assert envelope["status"] == "success"
    paid = envelope["invoice"]
    assert (paid["Status"], paid["AmountPaid"], paid["AmountOutstanding"]) == ("3", "25.00", "252.86")
    assert paid["PaymentMethod"] == "wire" and "AmountOpen" not in paid
    assert "TaxRate" not in paid and paid["Currency"] == "EUR"


async def test_seed_wefact_invoiceline_add_to_draft(sim: RunningSimulator, wf: Api) -> None:
    sim.admin("target").add_debtor(CompanyName="Jan Janssen B.V.")
    draft = (await wf.ok("invoice", "add", DebtorCode="DB0001", InvoiceLines=SEED_WF_LINES))["invoice"]
    assert draft["InvoiceCode"] == "[concept]0001" and draft["Status"] == "0"
    # The doc example passes one line as a flat array.
    envelope = await wf.ok(
        "invoiceline",
        "add",
        InvoiceCode="[concept]0001",
        InvoiceLines={
            "ProductCode": "P0001",
            "Description": "Werkzaamheden gebaseerd op uurtarief",
            "PriceExcl": 100,
        },
    )
    # WeFact answers in Dutch, as its documentation's example shows.
    assert envelope["success"] == ["Er zijn 1 factuurregels toegevoegd"]
    invoice = envelope["invoice"]
    assert (invoice["AmountExcl"], invoice["AmountTax"], invoice["AmountIncl"]) == (
        "329.64",
        "69.22",
        "398.86",
    )
    assert invoice["AmountOutstanding"] == "398.86" and invoice["Status"] == "0"
    assert len(invoice["InvoiceLines"]) == 4 and invoice["InvoiceLines"][3]["TaxCode"] == "V21"


async def test_seed_creditinvoice_edit(sim: RunningSimulator, hf: Api) -> None:
    sim.admin("source").add_creditor(CompanyName="Supplier BV", Term=30)
    added = await hf.ok(
        "creditinvoice",
        "add",
        CreditorCode="CD0001",
        InvoiceCode="2018-6422",
        Date="2018-01-01",
        InvoiceLines=[
            {"Number": 1, "Description": "SLA contract #2", "PriceExcl": 125, "TaxPercentage": 21},
            {"Number": 3, "Description": "Domains .com", "PriceExcl": "12.5", "TaxPercentage": 21},
        ],
    )
    assert added["creditinvoice"]["CreditInvoiceCode"] == "CF0001" and added["creditinvoice"]["Term"] == "30"
    envelope = await hf.ok("creditinvoice", "edit", CreditInvoiceCode="CF0001", Term="14")
    assert "success" not in envelope
    edited = envelope["creditinvoice"]
    assert (edited["AmountExcl"], edited["AmountIncl"], edited["Term"]) == ("162.50", "196.63", "14")
    assert (edited["Status"], edited["InvoiceCode"], edited["CreditorCode"]) == ("1", "2018-6422", "CD0001")
    assert [(ln["Number"], ln["PriceExcl"]) for ln in edited["InvoiceLines"]] == [("1", "125"), ("3", "12.5")]
    assert edited["AmountPaid"] == "0.00" and edited["Private"] == "0.00" and "AmountTax" not in edited


# -- envelope, transport and auth ----------------------------------------------------------------------------


async def test_envelope_strings_and_empty_list(sim: RunningSimulator, hf: Api, wf: Api) -> None:
    empty = await hf.ok("invoice", "list")
    assert "invoices" not in empty
    assert (empty["totalresults"], empty["currentresults"], empty["offset"]) == (0, 0, 0)
    seed_company_x(sim.admin("source"))
    invoice = await sent_invoice(hf)

    def scalars(value: Any) -> list[Any]:
        if isinstance(value, dict):
            return [s for item in value.values() for s in scalars(item)]
        if isinstance(value, list):
            return [s for item in value for s in scalars(item)]
        return [value]

    assert all(isinstance(value, str) for value in scalars(invoice))
    assert list(invoice)[:5] == ["Identifier", "InvoiceCode", "Debtor", "DebtorCode", "Status"]


async def test_auth_errors_in_hostfact_order(
    sim: RunningSimulator, hf: Api, session: aiohttp.ClientSession
) -> None:
    source = sim.admin("source")
    url = sim.api_url("source")
    async with session.post(url, data={"controller": "invoice", "action": "list"}) as response:
        body = await response.json()
    assert body["errors"] == ["No api_key provided"] and body["controller"] == "invalid"
    assert await Api(session, url, "wrong").error("invoice", "list") == ["API key is invalid"]
    source.allowed_ips = ["10.0.0.0/8"]
    assert await Api(session, url, "wrong").error("invoice", "list") == ["IP 127.0.0.1 has no access to API"]
    source.allowed_ips = ["10.0.0.1", "127.0.0.0/24"]
    await hf.ok("invoice", "list")
    source.api_access_enabled = False
    assert await Api(session, url, "wrong").error("invoice", "list") == ["API access has been disabled"]
    source.api_access_enabled = True
    # HostFact reads only the POST body: a GET, even with the key in the query, has no api_key.
    async with session.get(
        url, params={"api_key": HF_KEY, "controller": "invoice", "action": "list"}
    ) as response:
        assert (await response.json())["errors"] == ["No api_key provided"]
    assert await hf.error("nosuch", "list") == ["Invalid controller"]
    envelope = await hf.call("invoice", "fly")
    assert (envelope["controller"], envelope["action"], envelope["errors"]) == (
        "invoice",
        "invalid",
        ["Invalid action"],
    )
    # Controller and action names are case-insensitive; param keys fall back to their lowercase form.
    assert (await hf.ok("Invoice", "LIST"))["controller"] == "invoice"


async def test_json_bodies_and_content_types(
    sim: RunningSimulator, hf: Api, session: aiohttp.ClientSession
) -> None:
    seed_company_x(sim.admin("source"))
    body = {"api_key": HF_KEY, "controller": "invoice", "action": "add", "DebtorCode": "DB0001", "Status": 2}
    body["InvoiceLines"] = [{"Description": "A", "PriceExcl": 0.1, "TaxPercentage": 21}] * 3
    async with session.post(sim.api_url("source"), json=body) as response:
        invoice = (await response.json())["invoice"]
    assert invoice["AmountExcl"] == "0.30" and invoice["AmountIncl"] == "0.36"
    # A form body labelled as JSON: PHP fills no $_POST and json_decode fails, so there is no api_key.
    headers = {"Content-Type": "application/json"}
    data = "api_key=hf-key&controller=invoice&action=list"
    async with session.post(sim.api_url("source"), data=data, headers=headers) as response:
        assert (await response.json())["errors"] == ["No api_key provided"]
    # The HostFact path works too, and lowercase param keys are read as a fallback.
    realism = Api(session, f"{sim.base_url}/source/Pro/apiv2/api.php", HF_KEY)
    assert (await realism.ok("invoice", "show", identifier=1))["invoice"]["InvoiceCode"] == "F0001"


async def test_param_validation_like_hostfact(sim: RunningSimulator, hf: Api) -> None:
    seed_company_x(sim.admin("source"))
    # A wrongly typed top-level param is dropped, not refused.
    invoice = await sent_invoice(hf, Term="soon")
    assert invoice["Term"] == "14"
    errors = await hf.error(
        "invoice", "add", DebtorCode="DB0001", InvoiceLines=[{"PriceExcl": 1, "PeriodicID": 3}]
    )
    assert errors == ["InvoiceLines[0].PeriodicID is readonly"]
    # One bad line field drops the whole array.
    errors = await hf.error("invoice", "add", DebtorCode="DB0001", InvoiceLines=[{"PriceExcl": "abc"}])
    assert errors == ["Invoice [concept]0001 does not contain invoice lines"]
    assert await hf.error("invoice", "add", DebtorCode="DB0099", InvoiceLines=SEED_HF_LINES) == [
        "Unknown client number"
    ]
    assert await hf.error(
        "invoice", "add", DebtorCode="DB0001", Status=2, InvoiceCode="F0001", InvoiceLines=SEED_HF_LINES
    ) == ["Invalid invoice number"]
    errors = await hf.error("invoiceline", "add", Identifier=1, InvoiceLines=json.dumps(SEED_HF_LINES))
    assert errors == ["Invalid type for 'InvoiceLines'"]
    with pytest.raises(ApiFailure) as failure:
        sim.admin("source").add_invoice(DebtorCode="DB0001")
    assert failure.value.errors == ["Invoice [concept]0001 does not contain invoice lines"]


# -- invoice rules -------------------------------------------------------------------------------------------


async def test_show_by_identifier_or_exact_code(sim: RunningSimulator, hf: Api) -> None:
    seed_company_x(sim.admin("source"))
    first, second = await sent_invoice(hf), await sent_invoice(hf)
    shown = await hf.ok("invoice", "show", Identifier=second["Identifier"], InvoiceCode=first["InvoiceCode"])
    assert shown["invoice"]["InvoiceCode"] == "F0002"
    assert (await hf.ok("invoice", "show", InvoiceCode="F0001"))["invoice"]["Identifier"] == first[
        "Identifier"
    ]
    assert await hf.error("invoice", "show", InvoiceCode="F000") == ["Invalid identifier for invoice"]
    assert await hf.error("invoice", "show", Identifier=99) == ["Invalid identifier for invoice"]
    assert await hf.error("invoice", "show") == ["Invalid identifier for invoice"]


async def test_list_search_filters_and_paging(sim: RunningSimulator, hf: Api) -> None:
    source = sim.admin("source")
    seed_company_x(source)
    source.add_debtor(CompanyName="Other Ltd")
    for number in range(1, 12):
        source.add_invoice(
            DebtorCode="DB0001", Status=2, InvoiceCode=f"F{number:04d}", InvoiceLines=SEED_HF_LINES
        )
    source.add_invoice(DebtorCode="DB0002", InvoiceLines=SEED_HF_LINES)
    source.invoice_by_code("F0003")["ReferenceNumber"] = "SRC-3"
    await hf.ok("invoice", "partpayment", InvoiceCode="F0002", AmountPaid=1)

    found = await hf.ok("invoice", "list", searchfor="F001")
    assert sorted(row["InvoiceCode"] for row in found["invoices"]) == ["F0010", "F0011"]
    assert found["filters"] == {"searchfor": "F001"}
    near = await hf.ok("invoice", "list", searchat="ReferenceNumber", searchfor="SRC-")
    assert [row["InvoiceCode"] for row in near["invoices"]] == ["F0003"]
    assert (await hf.ok("invoice", "list", searchfor="company x"))["totalresults"] == 11
    assert [r["InvoiceCode"] for r in (await hf.ok("invoice", "list", status="3"))["invoices"]] == ["F0002"]
    assert (await hf.ok("invoice", "list", status="2|3"))["totalresults"] == 11
    assert (await hf.ok("invoice", "list", status="0"))["invoices"][0]["InvoiceCode"] == "[concept]0001"
    assert (await hf.ok("invoice", "list", debtor=2))["totalresults"] == 1
    assert await hf.error("invoice", "list", status="2|7") == [
        "Invalid filter 'status'. The status '7' does not exist"
    ]
    assert await hf.error("invoice", "list", searchat="Nope") == [
        "Invalid filter 'searchat'. Please enter valid columns or remove filter"
    ]
    page = await hf.ok("invoice", "list", status=2, sort="InvoiceCode", order="ASC", offset=4, limit=3)
    assert [r["InvoiceCode"] for r in page["invoices"]] == ["F0006", "F0007", "F0008"]
    assert (page["totalresults"], page["currentresults"], page["offset"]) == (10, 3, 4)
    source.invoice_by_code("F0005")["Modified"] = "2000-01-01 10:00:00"
    old = await hf.ok("invoice", "list", modified={"from": "1999-12-31", "to": "2000-01-01"})
    assert [r["InvoiceCode"] for r in old["invoices"]] == ["F0005"]
    recent = await hf.ok("invoice", "list", modified={"from": "2001-01-01 00:00:00"})
    assert recent["totalresults"] == 11


async def test_numbers_drafts_and_sending(sim: RunningSimulator, hf: Api) -> None:
    seed_company_x(sim.admin("source"))
    draft = (
        await hf.ok("invoice", "add", DebtorCode="DB0001", InvoiceCode="F0009", InvoiceLines=SEED_HF_LINES)
    )["invoice"]
    assert (
        draft["InvoiceCode"] == "[concept]0001" and draft["ScheduledAt"] == "" and draft["PaymentURL"] == ""
    )
    second = await hf.ok("invoice", "add", DebtorCode="DB0001", Status=0, InvoiceLines=SEED_HF_LINES)
    assert second["invoice"]["InvoiceCode"] == "[concept]0002"
    sent = await hf.ok("invoice", "sendbyemail", Identifier=draft["Identifier"])
    assert sent["invoice"]["InvoiceCode"] == "F0001" and sent["invoice"]["Status"] == "2"
    assert (
        sent["invoice"]["Sent"] == "1"
        and sent["invoice"]["SentDate"] != ""
        and "ScheduledAt" not in sent["invoice"]
    )
    assert sent["success"] == ["Invoice F0001 has been sent by e-mail"] and "warning" not in sent
    again = await hf.ok("invoice", "sendbyemail", InvoiceCode="F0001")
    assert again["invoice"]["Sent"] == "2" and again["invoice"]["InvoiceCode"] == "F0001"
    reminder = await hf.ok("invoice", "sendreminderbyemail", InvoiceCode="F0001")
    assert "invoice" not in reminder and sim.admin("source").invoice_by_code("F0001")["Reminders"] == 1
    await hf.ok("invoice", "sendsummationbyemail", InvoiceCode="F0001")
    assert sim.admin("source").invoice_by_code("F0001")["Summations"] == 1
    errors = await hf.error("invoice", "sendreminderbyemail", InvoiceCode="[concept]0002")
    assert errors == ["It is not possible to send a payment reminder for invoice [concept]0002"]
    numbered = await sent_invoice(hf)
    assert numbered["InvoiceCode"] == "F0002"
    edited = await hf.ok("invoice", "edit", InvoiceCode="[concept]0002", Status=2)
    assert edited["invoice"]["InvoiceCode"] == "F0003" and "success" not in edited


async def test_edit_invoice_fields_lines_and_number(sim: RunningSimulator, hf: Api) -> None:
    seed_company_x(sim.admin("source"))
    invoice = await sent_invoice(hf)
    first_line = invoice["InvoiceLines"][0]["Identifier"]
    edited = await hf.ok(
        "invoice",
        "edit",
        Identifier=invoice["Identifier"],
        ReferenceNumber="SRC-1",
        InvoiceLines=[
            {"Identifier": first_line, "PriceExcl": 100},
            {"Description": "Extra", "PriceExcl": 10},
        ],
    )
    out = edited["invoice"]
    assert out["ReferenceNumber"] == "SRC-1" and len(out["InvoiceLines"]) == 3
    assert (out["AmountExcl"], out["AmountIncl"]) == ("125.00", "151.25")
    await sent_invoice(hf)
    assert await hf.error("invoice", "edit", Identifier=invoice["Identifier"], InvoiceCode="F0002") == [
        "Invoice number F0002 is already used by a different invoice"
    ]
    assert await hf.error(
        "invoice", "edit", Identifier=2, InvoiceLines=[{"Identifier": first_line, "Number": 2}]
    ) == ["Invoice line 1 cannot be edited, because it belongs to invoice F0001"]


async def test_partpayment_transitions_and_errors(sim: RunningSimulator, hf: Api) -> None:
    seed_company_x(sim.admin("source"))
    draft = (await hf.ok("invoice", "add", DebtorCode="DB0001", InvoiceLines=SEED_HF_LINES))["invoice"]
    assert await hf.error("invoice", "partpayment", Identifier=draft["Identifier"], AmountPaid=1) == [
        "Invoice [concept]0001 cannot receive a partial payment, because it is still a draft invoice. "
        "Please send the invoice first."
    ]
    code = (await sent_invoice(hf))["InvoiceCode"]

    async def pay(amount: Any, **extra: Any) -> dict[str, Any]:
        invoice: dict[str, Any] = (
            await hf.ok("invoice", "partpayment", InvoiceCode=code, AmountPaid=amount, **extra)
        )["invoice"]
        return invoice

    assert (await pay(100))["Status"] == "3"
    reverted = await pay(-100)
    assert (reverted["Status"], reverted["AmountPaid"]) == ("2", "0.00")
    assert (await pay("0"))["Status"] == "2"
    nothing = await hf.ok("invoice", "partpayment", InvoiceCode=code)
    assert nothing["invoice"]["AmountPaid"] == "0.00"
    over = await pay("250.00")
    assert (over["Status"], over["AmountPaid"]) == ("3", "250.00")
    back = await pay("-50.35", PayDate="2024-05-01")
    assert (back["Status"], back["AmountPaid"], back["PayDate"]) == ("4", "199.65", "2024-05-01")
    assert await hf.error("invoice", "partpayment", InvoiceCode=code, AmountPaid=1) == [
        "The invoice is already paid"
    ]
    other = (await sent_invoice(hf))["InvoiceCode"]
    full = await hf.ok("invoice", "partpayment", InvoiceCode=other, AmountPaid="199.65")
    assert full["invoice"]["Status"] == "4" and full["invoice"]["PayDate"] != ""


async def test_markaspaid_and_markasunpaid(sim: RunningSimulator, hf: Api) -> None:
    seed_company_x(sim.admin("source"))
    code = (await sent_invoice(hf))["InvoiceCode"]
    paid = await hf.ok("invoice", "markaspaid", InvoiceCode=code, PayDate="2024-02-02")
    assert paid["success"] == ["Invoice F0001 has been paid."] and "invoice" not in paid
    stored = sim.admin("source").invoice_by_code(code)
    assert (stored["Status"], stored["AmountPaid"], stored["PayDate"]) == (4, Decimal(0), "2024-02-02")
    assert await hf.error("invoice", "markaspaid", InvoiceCode=code) == ["The invoice is already paid"]
    unpaid = await hf.ok("invoice", "markasunpaid", InvoiceCode=code)
    assert unpaid["success"] == ["Payment undone for invoice F0001."] and "invoice" not in unpaid
    assert (stored["Status"], stored["PayDate"]) == (2, "")
    assert await hf.error("invoice", "markasunpaid", InvoiceCode=code) == ["Invoice is not marked as paid"]
    # A partial payment, then marked paid, goes back to partly paid; a full payment back to sent with 0.00.
    await hf.ok("invoice", "partpayment", InvoiceCode=code, AmountPaid=50)
    await hf.ok("invoice", "markaspaid", InvoiceCode=code)
    assert stored["AmountPaid"] == Decimal(50)
    await hf.ok("invoice", "markasunpaid", InvoiceCode=code)
    assert (stored["Status"], stored["AmountPaid"]) == (3, Decimal(50))
    await hf.ok("invoice", "partpayment", InvoiceCode=code, AmountPaid="149.65")
    await hf.ok("invoice", "markasunpaid", InvoiceCode=code)
    assert (stored["Status"], stored["AmountPaid"]) == (2, Decimal(0))
    # HostFact 6.0.2 prints nothing for markaspaid on a draft or a cancelled invoice.
    draft = (await hf.ok("invoice", "add", DebtorCode="DB0001", InvoiceLines=SEED_HF_LINES))["invoice"]
    status, _, text = await hf.raw("invoice", "markaspaid", Identifier=draft["Identifier"])
    assert (status, text) == (200, "")
    assert sim.admin("source").calls[-1].outcome == "empty"


async def test_credit(sim: RunningSimulator, hf: Api) -> None:
    seed_company_x(sim.admin("source"))
    original = await sent_invoice(hf)
    await hf.ok("invoice", "partpayment", InvoiceCode="F0001", AmountPaid=10)
    await sent_invoice(hf)
    envelope = await hf.ok("invoice", "credit", InvoiceCode="F0001")
    # invoice_api_controller::credit_api_action: the original's message first.
    assert envelope["success"] == [
        "Invoice F0001 is credited and set on status 'cancelled'",
        "Invoice F0003 has been created successfully",
    ]
    credit = envelope["invoice"]
    assert (credit["InvoiceCode"], credit["Status"], credit["Sent"]) == ("F0003", "8", "0")
    assert (credit["AmountExcl"], credit["AmountIncl"], credit["AmountPaid"]) == (
        "-165.00",
        "-199.65",
        "0.00",
    )
    # Every line negated, and the CREDIT_TEXT line at 0 that names the original (installation.sql's default).
    assert [line["PriceExcl"] for line in credit["InvoiceLines"]] == ["-150", "-15", "0"]
    assert credit["InvoiceLines"][2]["Description"] == "Corresponderende factuur: F0001"
    shown = (await hf.ok("invoice", "show", Identifier=original["Identifier"]))["invoice"]
    assert (shown["Status"], shown["AmountPaid"]) == ("9", "0.00")
    assert sim.admin("source").invoice_by_code("F0003")["CorrespondingInvoice"] == int(original["Identifier"])
    assert await hf.error("invoice", "credit", InvoiceCode="F0001") == [
        "Failed to create a credit invoice for F0001. Invoice has status cancelled"
    ]
    draft = await hf.ok("invoice", "add", DebtorCode="DB0001", InvoiceLines=SEED_HF_LINES)
    assert await hf.error("invoice", "credit", Identifier=draft["invoice"]["Identifier"]) == [
        "It is not possible to credit draft invoice [concept]0001"
    ]
    assert await hf.error("invoice", "delete", InvoiceCode="F0002") == ["Only draft invoices can be deleted"]
    deleted = await hf.ok("invoice", "delete", InvoiceCode="[concept]0001")
    assert deleted["success"] == ["Invoice [concept]0001 has been deleted"] and "invoice" not in deleted


async def test_invoiceline_delete(sim: RunningSimulator, hf: Api) -> None:
    seed_company_x(sim.admin("source"))
    first, second = await sent_invoice(hf), await sent_invoice(hf)
    ids = [line["Identifier"] for line in first["InvoiceLines"]]
    other = second["InvoiceLines"][0]["Identifier"]
    assert await hf.error(
        "invoiceline", "delete", InvoiceCode="F0001", InvoiceLines=[{"Identifier": 99}]
    ) == ["No invoice line found with identifier '99'"]
    assert await hf.error(
        "invoiceline", "delete", InvoiceCode="F0001", InvoiceLines=[{"Identifier": other}]
    ) == ["It is not possible to delete invoice lines of another invoice"]
    everything = [{"Identifier": line_id} for line_id in ids]
    assert await hf.error("invoiceline", "delete", InvoiceCode="F0001", InvoiceLines=everything) == [
        "It is not possible to delete all invoice lines of an invoice. "
        "An invoice needs to contain at least one invoice line."
    ]
    envelope = await hf.ok(
        "invoiceline", "delete", InvoiceCode="F0001", InvoiceLines=[{"Identifier": ids[1]}]
    )
    assert envelope["success"] == ["Successfully deleted 1 invoice lines"]
    assert envelope["invoice"]["AmountIncl"] == "181.50"


async def test_wefact_dialect_rules(sim: RunningSimulator, wf: Api) -> None:
    sim.admin("target").add_debtor(CompanyName="Jan Janssen B.V.")
    lines = [{"Description": "Low rate", "PriceExcl": 100, "TaxCode": "V9"}]
    assert await wf.error("invoice", "add", Identifier=5, DebtorCode="DB0001", InvoiceLines=lines) == [
        "Een Identifier is niet toegestaan voor deze actie"
    ]
    assert await wf.error("invoice", "add", Status=1, DebtorCode="DB0001", InvoiceLines=lines) == [
        "Ongeldige status"
    ]
    assert await wf.error("invoice", "list", status="1") == [
        "Invalid filter 'status'. The status '1' does not exist"
    ]
    draft = (await wf.ok("invoice", "add", DebtorCode="DB0001", InvoiceLines=lines))["invoice"]
    assert (draft["AmountTax"], draft["InvoiceLines"][0]["TaxPercentage"]) == ("9.00", "9")
    assert (
        "ScheduledAt" in draft
        and "UsedTaxrates" not in draft
        and "NoDiscountAmountIncl" not in draft["InvoiceLines"][0]
    )
    sent = await wf.ok("invoice", "sendbyemail", InvoiceCode=draft["InvoiceCode"])
    assert sent["warning"] == [] and sent["invoice"]["InvoiceCode"] == "F0001"
    await wf.ok("invoice", "markaspaid", InvoiceCode="F0001")
    shown = (await wf.ok("invoice", "show", InvoiceCode="F0001"))["invoice"]
    assert (shown["Status"], shown["AmountPaid"], shown["AmountOutstanding"]) == ("4", "0.00", "0.00")
    assert await wf.error("creditinvoice", "add", CreditorCode="CD0001", InvoiceLines=lines) == [
        "Ongeldige identifier voor crediteur"
    ]


async def test_creditinvoice_payments_and_errors(sim: RunningSimulator, hf: Api, wf: Api) -> None:
    sim.admin("source").add_creditor(CompanyName="Supplier BV")
    lines = [{"Description": "Hosting", "PriceExcl": 100, "TaxPercentage": 21}]
    added = (await hf.ok("creditinvoice", "add", Creditor=1, InvoiceCode="INV-7", InvoiceLines=lines))[
        "creditinvoice"
    ]
    assert (added["CreditInvoiceCode"], added["Status"], added["AmountIncl"]) == ("CF0001", "1", "121.00")
    code = added["CreditInvoiceCode"]
    part = await hf.ok("creditinvoice", "partpayment", CreditInvoiceCode=code, AmountPaid=21)
    assert part["creditinvoice"]["Status"] == "2" and part["creditinvoice"]["AmountPaid"] == "21.00"
    row = (await hf.ok("creditinvoice", "list"))["creditinvoices"][0]
    assert row["PartPayment"] == "100.00" and row["CompanyName"] == "Supplier BV"
    done = await hf.ok("creditinvoice", "partpayment", CreditInvoiceCode=code, AmountPaid=100)
    assert done["creditinvoice"]["Status"] == "3" and done["creditinvoice"]["PayDate"] != ""
    assert await hf.error("creditinvoice", "partpayment", CreditInvoiceCode=code, AmountPaid=1) == [
        "Purchasing invoice is already paid"
    ]
    assert await hf.error("creditinvoice", "markaspaid", CreditInvoiceCode=code) == [
        "Purchasing invoice is already paid"
    ]
    second = (await hf.ok("creditinvoice", "add", CreditorCode="CD0001", InvoiceLines=lines))["creditinvoice"]
    over = await hf.ok("creditinvoice", "partpayment", Identifier=second["Identifier"], AmountPaid=200)
    assert over["creditinvoice"]["Status"] == "2" and len(over["warning"]) == 1
    marked = await hf.ok("creditinvoice", "markaspaid", Identifier=second["Identifier"])
    assert "creditinvoice" not in marked
    shown = (await hf.ok("creditinvoice", "show", Identifier=second["Identifier"]))["creditinvoice"]
    assert (shown["Status"], shown["AmountPaid"]) == ("3", "0.00")
    assert await hf.error("creditinvoice", "show", Identifier=9) == [
        "Invalid identifier for purchasing invoice"
    ]
    assert await hf.error(
        "creditinvoice", "add", CreditorCode="CD0001", CreditInvoiceCode="CF0001", InvoiceLines=lines
    ) == ["Invoice no. CF0001 is already in use for another purchase invoice."]
    assert await hf.error("creditinvoice", "add", CreditorCode="CD0009", InvoiceLines=lines) == [
        "Invalid identifier for supplier"
    ]
    # Purchase credit invoice for the purchase route: Status 8 with negated lines.
    negative = [{"Description": "Hosting", "PriceExcl": -100, "TaxPercentage": 21}]
    credit = await hf.ok("creditinvoice", "add", CreditorCode="CD0001", Status=8, InvoiceLines=negative)
    assert credit["creditinvoice"]["AmountIncl"] == "-121.00"
    # WeFact: statuses 1/2/3/8, the supplier's number is required, lines carry I-codes.
    sim.admin("target").add_creditor(CompanyName="Leverancier")
    assert len(await wf.error("creditinvoice", "add", CreditorCode="CD0001", InvoiceLines=lines)) == 1
    assert await wf.error(
        "creditinvoice", "add", CreditorCode="CD0001", InvoiceCode="X", Status=0, InvoiceLines=lines
    ) == ["Ongeldige status"]
    wf_added = await wf.ok("creditinvoice", "add", CreditorCode="CD0001", InvoiceCode="X", InvoiceLines=lines)
    assert wf_added["creditinvoice"]["InvoiceLines"][0]["TaxCode"] == "I21"
    assert wf_added["creditinvoice"]["AmountOutstanding"] == "121.00"


async def test_debtors_and_creditors(sim: RunningSimulator, hf: Api, wf: Api) -> None:
    first = (await hf.ok("debtor", "add", CompanyName="Alpha BV", EmailAddress="a@example.com"))["debtor"]
    second = (await hf.ok("debtor", "add", CompanyName="Beta BV"))["debtor"]
    assert (first["DebtorCode"], second["DebtorCode"]) == ("DB0001", "DB0002")
    assert (await hf.ok("debtor", "show", DebtorCode="DB0002"))["debtor"]["CompanyName"] == "Beta BV"
    assert (await hf.ok("debtor", "list", searchfor="alpha"))["debtors"][0]["DebtorCode"] == "DB0001"
    # debtor::show's own text (en_EN "invalid identifier for debtor" reads "...for client"), and by code
    # api_controller::_get_debtor_id's "Unknown client number".
    assert await hf.error("debtor", "show", Identifier=7) == ["Invalid identifier for client"]
    assert await hf.error("debtor", "show", DebtorCode="DB0404") == ["Unknown client number"]
    assert await hf.error("debtor", "add", DebtorCode="DB0001") == ["Client number DB0001 is already in use"]
    creditor = (await hf.ok("creditor", "add", CompanyName="Supplier BV"))["creditor"]
    assert creditor["CreditorCode"] == "CD0001"
    assert (await hf.ok("creditor", "list"))["creditors"][0]["CompanyName"] == "Supplier BV"
    assert await wf.error("debtor", "add", Identifier=1, CompanyName="X") == [
        "Een Identifier is niet toegestaan voor deze actie"
    ]


# -- faults --------------------------------------------------------------------------------------------------


async def test_fault_kinds_seen_by_a_client(
    sim: RunningSimulator, hf: Api, session: aiohttp.ClientSession
) -> None:
    source = sim.admin("source")
    seed_company_x(source)
    await sent_invoice(hf)

    source.faults.inject("latency", seconds=0.2, times=1)
    started = time.monotonic()
    await hf.ok("invoice", "list")
    assert time.monotonic() - started >= 0.2 and source.calls[-1].fault == "latency"

    http_faults: list[tuple[FaultKind, int]] = [("http_500", 500), ("http_502", 502), ("http_503", 503)]
    for kind, status in http_faults:
        source.faults.inject(kind, times=1)
        code, headers, text = await hf.raw("invoice", "list")
        assert code == status and headers["Content-Type"].startswith("text/html") and "<html>" in text

    source.faults.inject("html", times=1)
    code, headers, text = await hf.raw("invoice", "list")
    assert code == 200 and "Fatal error" in text and headers["Content-Type"].startswith("text/html")
    source.faults.inject("html", status=500, times=1)
    assert (await hf.raw("invoice", "list"))[0] == 500

    source.faults.inject("empty_body", times=1)
    status_code, _, text = await hf.raw("invoice", "list")
    assert (status_code, text) == (200, "")
    assert (await hf.raw("invoice", "list"))[2] != ""

    source.faults.inject("concurrent", times=1)
    errors = await hf.error("invoice", "partpayment", InvoiceCode="F0001", AmountPaid=1)
    assert errors == ["API has concurrent calls, but the queue was not able to fix them in 5 seconds."]
    assert source.invoice_by_code("F0001")["AmountPaid"] == 0

    source.faults.inject("ban_403", times=1)
    code, _, text = await hf.raw("invoice", "list")
    assert code == 403 and "currently in firewall" in text
    await hf.ok("invoice", "list")

    source.faults.inject("timeout", seconds=5, times=1)
    body = encode_form(
        {"api_key": HF_KEY, "controller": "invoice", "action": "markaspaid", "InvoiceCode": "F0001"}
    )
    with pytest.raises(asyncio.TimeoutError):
        async with session.post(hf.url, data=body, timeout=aiohttp.ClientTimeout(total=0.3)) as response:
            await response.read()
    assert source.invoice_by_code("F0001")["Status"] == 2

    source.faults.inject("lost_answer", action="partpayment", times=1)
    with pytest.raises(aiohttp.ClientConnectionError):
        await hf.raw("invoice", "partpayment", InvoiceCode="F0001", AmountPaid="9.65")
    assert source.invoice_by_code("F0001")["AmountPaid"] == Decimal("9.65")
    lost = source.calls[-1]
    assert (lost.fault, lost.outcome, lost.applied, lost.http_status) == (
        "lost_answer",
        "success",
        True,
        None,
    )
    assert source.faults.rules == []


async def test_fault_matching_times_probability_and_control_routes(
    sim: RunningSimulator, hf: Api, session: aiohttp.ClientSession
) -> None:
    source = sim.admin("source")
    seed_company_x(source)
    await sent_invoice(hf)
    source.faults.inject("http_503", controller="invoice", writes_only=True, times=2)
    assert (await hf.raw("invoice", "show", InvoiceCode="F0001"))[0] == 200
    assert (await hf.raw("debtor", "add", CompanyName="Z"))[0] == 200
    assert (await hf.raw("invoice", "markaspaid", InvoiceCode="F0001"))[0] == 503
    assert (await hf.raw("invoice", "markaspaid", InvoiceCode="F0001"))[0] == 503
    assert (await hf.raw("invoice", "markaspaid", InvoiceCode="F0001"))[0] == 200

    def outcomes(seed: int) -> list[bool]:
        admin = SimAdministration("p", "hostfact", "k", seed=seed)
        admin.faults.inject("http_500", probability=0.5)
        return [admin.faults.pick("invoice", "list", False) is not None for _ in range(40)]

    assert outcomes(7) == outcomes(7) and outcomes(7) != outcomes(8) and 5 < sum(outcomes(7)) < 35

    control = sim.control_url("source")
    async with session.post(
        control + "faults", json={"kind": "http_502", "action": "list", "times": 1}
    ) as response:
        rules = (await response.json())["rules"]
    assert rules[0]["kind"] == "http_502" and rules[0]["times"] == 1
    async with session.post(control + "faults", json={"kind": "nope"}) as response:
        assert response.status == 400
    assert (await hf.raw("invoice", "list"))[0] == 502
    async with session.post(control + "faults", json=[{"kind": "http_500"}, {"kind": "latency"}]) as response:
        assert len((await response.json())["rules"]) == 2
    async with session.delete(control + "faults") as response:
        assert (await response.json())["rules"] == []
    assert (await hf.raw("invoice", "list"))[0] == 200
    source.faults.add(FaultRule("empty_body", action="show"))
    assert (await hf.raw("invoice", "show", InvoiceCode="F0001"))[2] == ""
    assert source.faults.rules[0].hits == 1


async def test_call_log_redacts_and_counts(
    sim: RunningSimulator, hf: Api, session: aiohttp.ClientSession
) -> None:
    source = sim.admin("source")
    seed_company_x(source)
    await sent_invoice(hf)
    await hf.ok("invoice", "list")
    await hf.error("invoice", "show", InvoiceCode="nope")
    calls = source.calls
    assert [(c.controller, c.action, c.outcome) for c in calls] == [
        ("invoice", "add", "success"),
        ("invoice", "list", "success"),
        ("invoice", "show", "error"),
    ]
    assert all(c.params["api_key"] == "REDACTED" for c in calls)
    assert calls[0].applied and not calls[1].applied and calls[2].errors == ["Invalid identifier for invoice"]
    assert source.count_calls("invoice") == 3 and source.count_calls(writes_only=True) == 1
    async with session.get(sim.control_url("source") + "calls", params={"action": "list"}) as response:
        logged = await response.json()
    assert logged["count"] == 1 and HF_KEY not in json.dumps(logged)
    async with session.get(sim.control_url("source") + "state") as response:
        state = await response.json()
    assert state["invoices"][0]["AmountIncl"] == "199.65" and state["debtors"][0]["DebtorCode"] == "DB0001"
    async with session.post(sim.control_url("source") + "reset") as response:
        assert response.status == 200
    assert source.invoices == {} and source.calls == []
    async with session.get(sim.base_url + "/") as response:
        names = [a["name"] for a in (await response.json())["administrations"]]
    assert names == ["source", "target"]


# -- WeFact rate limit ---------------------------------------------------------------------------------------


async def test_wefact_rate_limit_headers_and_ban(session: aiohttp.ClientSession) -> None:
    target = SimAdministration(
        "target", "wefact", WF_KEY, rate_limit_per_minute=3, rate_limit_per_hour=1000, ban_seconds=60
    )
    source = SimAdministration("source", "hostfact", HF_KEY)
    now = [1_700_000_010.0]
    target.firewall.clock = lambda: now[0]
    async with run_simulator([target, source]) as running:
        wf = Api(session, running.api_url("target"), WF_KEY)
        remaining = []
        for _ in range(3):
            status, headers, _ = await wf.raw("invoice", "list")
            assert status == 200
            remaining.append(headers["API-RateLimit-Remaining-Minute"])
            assert headers["API-RateLimit-Reset-Minute"] == "1700000040"
            assert headers["API-RateLimit-Remaining-Hour"] == str(1000 - len(remaining))
        assert remaining == ["2", "1", "0"]
        status, headers, text = await wf.raw("invoice", "list")
        assert (
            status == 403 and "currently in firewall" in text and "API-RateLimit-Remaining-Minute" in headers
        )
        now[0] += 30  # a new minute, but the ban holds
        assert (await wf.raw("invoice", "list"))[0] == 403
        now[0] += 31
        assert (await wf.raw("invoice", "list"))[0] == 200
        assert target.calls[3].outcome == "banned"
        # HostFact has no rate limit and no rate-limit headers.
        hf = Api(session, running.api_url("source"), HF_KEY)
        assert not any(h.startswith("API-RateLimit") for h in (await hf.raw("invoice", "list"))[1])


# -- hooks ---------------------------------------------------------------------------------------------------


async def test_hooks_fired_signed_with_exact_keys(session: aiohttp.ClientSession) -> None:
    async with serve_receiver() as receiver:
        source = SimAdministration("source", "hostfact", HF_KEY, hooks_url=receiver.url, hook_secret=SECRET)
        async with run_simulator([source]) as running:
            hf = Api(session, running.api_url("source"), HF_KEY)
            seed_company_x(source)
            draft = (await hf.ok("invoice", "add", DebtorCode="DB0001", InvoiceLines=SEED_HF_LINES))[
                "invoice"
            ]
            await hf.ok("invoice", "edit", Identifier=draft["Identifier"], Comment="x")
            await hf.ok("invoiceline", "add", Identifier=draft["Identifier"], InvoiceLines=[{"PriceExcl": 1}])
            await hf.ok("invoice", "sendbyemail", Identifier=draft["Identifier"])
            await hf.ok("invoice", "sendreminderbyemail", InvoiceCode="F0001")
            await hf.ok("invoice", "sendsummationbyemail", InvoiceCode="F0001")
            await hf.ok("invoice", "partpayment", InvoiceCode="F0001", AmountPaid="100")
            await hf.ok("invoice", "partpayment", InvoiceCode="F0001", AmountPaid="100.86")
            await hf.ok("invoice", "markasunpaid", InvoiceCode="F0001")
            await hf.ok("invoice", "markaspaid", InvoiceCode="F0001")
            await hf.ok("invoice", "credit", InvoiceCode="F0001")
            # factsync's hooks.php forwards invoice hooks only; HostFact itself fires debtor hooks too.
            await hf.ok("debtor", "add", CompanyName="Not forwarded")
            source.forwarded_hooks = None
            await hf.ok("debtor", "add", CompanyName="New")
            await hf.ok("creditor", "add", CompanyName="Supplier")
            await hf.ok("creditinvoice", "add", CreditorCode="CD0001", InvoiceLines=[{"PriceExcl": 5}])
            await hf.ok("invoice", "list")

    ref = {"id": 1, "Debtor": 1, "InvoiceCode": "F0001"}
    counts = {"viaMail": True, "viaPost": False}
    expected = [
        ("invoice_is_created", {"id": 1, "Debtor": 1, "InvoiceCode": "[concept]0001"}),
        ("invoice_is_edited", {"id": 1, "Debtor": 1, "InvoiceCode": "[concept]0001"}),
        ("invoice_is_edited", {"id": 1, "Debtor": 1, "InvoiceCode": "[concept]0001"}),
        ("invoice_is_sent", ref | counts | {"Sent": 1, "Reminders": 0, "Summations": 0}),
        ("invoice_reminder_is_sent", ref | counts | {"Sent": 1, "Reminders": 1, "Summations": 0}),
        ("invoice_summation_is_sent", ref | counts | {"Sent": 1, "Reminders": 1, "Summations": 1}),
        (
            "invoice_is_partly_paid",
            ref | {"AmountPaidNow": 100, "AmountPaidTotal": 100, "AmountOpen": 100.86},
        ),
        ("invoice_is_paid", ref),
        ("invoice_is_unpaid", ref),
        ("invoice_is_paid", ref),
        ("invoice_is_credited", ref | {"CreditInvoiceID": 2, "CreditInvoiceCode": "F0002"}),
        # A credit invoice's invoice_is_created, as factsync's hooks.php sends it: at the request's end, with
        # the original and the original's Status (9: a full credit) that HostFact's API does not show.
        (
            "invoice_is_created",
            {
                "id": 2,
                "Debtor": 1,
                "InvoiceCode": "F0002",
                "CorrespondingInvoice": 1,
                "CorrespondingInvoiceStatus": 9,
            },
        ),
        ("debtor_is_created", {"id": 3, "DebtorCode": "DB0003"}),
    ]
    assert [(p["action"], p["data"]) for p in receiver.payloads] == expected
    assert [hook.action for hook in source.hooks_fired] == [name for name, _ in expected]
    assert all(hook.http_status == 202 and hook.delivered for hook in source.hooks_fired)
    assert len({h["webhook-id"] for h in receiver.headers}) == len(expected)


async def test_hook_delivery_modes_and_failures(session: aiohttp.ClientSession) -> None:
    async with serve_receiver() as receiver:
        background = SimAdministration(
            "bg", "hostfact", HF_KEY, hooks_url=receiver.url, hook_secret=SECRET, hook_delivery="background"
        )
        broken = SimAdministration(
            "broken", "hostfact", HF_KEY, hooks_url="http://127.0.0.1:9/none", hook_secret=SECRET
        )
        async with run_simulator([background, broken]) as running:
            for admin in (background, broken):
                seed_company_x(admin)
                api = Api(session, running.api_url(admin.name), HF_KEY)
                await sent_invoice(api)
            await running.drain_hooks()
            assert receiver.actions() == ["invoice_is_created"] and background.hooks_fired[0].delivered
            assert broken.hooks_fired[0].http_status is None and broken.hooks_fired[0].error
            receiver.status = 500
            await Api(session, running.api_url("bg"), HF_KEY).ok("invoice", "markaspaid", InvoiceCode="F0001")
            await background.drain_hooks()
            assert background.hooks_fired[-1].http_status == 500
            async with session.get(running.control_url("bg") + "hooks") as response:
                logged = await response.json()
            assert [h["action"] for h in logged["hooks"]] == ["invoice_is_created", "invoice_is_paid"]
            assert logged["hooks"][0]["data"] == {"id": 1, "Debtor": 1, "InvoiceCode": "F0001"}


async def test_credit_partly_like_hostfacts_back_office(session: aiohttp.ClientSession) -> None:
    """invoice::createCreditInvoice with credit_type "partly": a credit invoice of the chosen lines and
    numbers; a sent or partly paid original gets the credit as paid (Status 4 and invoice_is_paid once
    covered); a paid one is left as it was; every line at its whole number is a full credit."""
    async with serve_receiver() as receiver:
        source = SimAdministration("source", "hostfact", HF_KEY, hooks_url=receiver.url, hook_secret=SECRET)
        async with run_simulator([source]) as running:
            hf = Api(session, running.api_url("source"), HF_KEY)
            seed_company_x(source)
            first = await sent_invoice(hf)  # 150 + 15 excl, 199.65 incl
            setup, domain = (line["Identifier"] for line in source.invoice(1)["InvoiceLines"])
            await hf.ok("invoice", "partpayment", Identifier=first["Identifier"], AmountPaid="100")
            receiver.payloads.clear()

            credit = await source.credit_partly(1, {domain: 1})
            assert (credit["Status"], credit["InvoiceCode"], credit["CorrespondingInvoice"]) == (
                8,
                "F0002",
                1,
            )
            assert [(line["Description"], line["PriceExcl"]) for line in credit["InvoiceLines"]] == [
                ("Domain example.com", Decimal(-15)),
                ("Corresponderende factuur: F0001", Decimal(0)),
            ]
            assert credit["AmountIncl"] == Decimal("-18.15")
            original = source.invoice(1)
            assert (original["Status"], original["AmountPaid"]) == (3, Decimal("118.15"))
            assert receiver.payloads == [
                {
                    "action": "invoice_is_created",
                    "data": {
                        "id": 2,
                        "Debtor": 1,
                        "InvoiceCode": "F0002",
                        "CorrespondingInvoice": 1,
                        "CorrespondingInvoiceStatus": 3,
                    },
                }
            ]

            # Half the setup fee, 90.75 incl., more than the 81.50 open: overpaid, as HostFact leaves it.
            await source.credit_partly(1, {setup: "0.5"})
            assert (source.invoice(1)["Status"], source.invoice(1)["AmountPaid"]) == (3, Decimal("208.90"))

            second = await sent_invoice(hf)
            await hf.ok("invoice", "partpayment", Identifier=second["Identifier"], AmountPaid="181.50")
            lines = [line["Identifier"] for line in source.invoice(int(second["Identifier"]))["InvoiceLines"]]
            receiver.payloads.clear()
            await source.credit_partly(int(second["Identifier"]), {lines[1]: 1})
            covered = source.invoice(int(second["Identifier"]))
            assert (covered["Status"], covered["AmountPaid"], covered["PayDate"]) == (
                4,
                Decimal("199.65"),
                source.store.today(),
            )
            assert [p["action"] for p in receiver.payloads] == ["invoice_is_paid", "invoice_is_created"]

            third = await sent_invoice(hf)
            await hf.ok("invoice", "markaspaid", Identifier=third["Identifier"])
            lines = [line["Identifier"] for line in source.invoice(int(third["Identifier"]))["InvoiceLines"]]
            await source.credit_partly(int(third["Identifier"]), {lines[0]: 1})
            paid = source.invoice(int(third["Identifier"]))
            assert (paid["Status"], paid["AmountPaid"]) == (4, Decimal("0.00")), "a paid original is kept"

            fourth = await sent_invoice(hf)
            lines = [line["Identifier"] for line in source.invoice(int(fourth["Identifier"]))["InvoiceLines"]]
            receiver.payloads.clear()
            full = await source.credit_partly(int(fourth["Identifier"]), {lines[0]: 1, lines[1]: 1})
            assert source.invoice(int(fourth["Identifier"]))["Status"] == 9
            assert full["AmountIncl"] == Decimal("-199.65")
            assert [p["action"] for p in receiver.payloads] == ["invoice_is_credited", "invoice_is_created"]
            assert receiver.payloads[1]["data"]["CorrespondingInvoiceStatus"] == 9

            with pytest.raises(ApiFailure):
                await source.credit_partly(int(fourth["Identifier"]), {lines[0]: 1})  # cancelled
            with pytest.raises(ApiFailure):
                await source.credit_partly(1, {})


async def test_the_back_offices_partial_credit_over_http(session: aiohttp.ClientSession) -> None:
    async with serve_receiver() as receiver:
        source = SimAdministration("source", "hostfact", HF_KEY, hooks_url=receiver.url, hook_secret=SECRET)
        async with run_simulator([source]) as running:
            seed_company_x(source)
            await sent_invoice(Api(session, running.api_url("source"), HF_KEY))
            url = running.control_url("source") + "credit-partly"
            async with session.post(url, json={"Identifier": 1, "Lines": {"2": 1}}) as response:
                assert response.status == 200
                credit = (await response.json())["invoice"]
            assert (credit["Status"], credit["AmountIncl"]) == ("8", "-18.15")
            assert receiver.actions() == ["invoice_is_created", "invoice_is_created"]
            async with session.post(url, json={"Identifier": 1, "Lines": {"99": 1}}) as response:
                assert response.status == 400 and "99" in (await response.json())["error"]
            async with session.post(url, json={"Identifier": 1}) as response:
                assert response.status == 400


async def test_inline_hooks_hold_hostfacts_api_lock(session: aiohttp.ClientSession) -> None:
    async with serve_receiver() as receiver:
        source = SimAdministration("source", "hostfact", HF_KEY, hooks_url=receiver.url, hook_secret=SECRET)
        source.concurrency_wait = 0.2
        async with run_simulator([source]) as running:
            hf = Api(session, running.api_url("source") + "?language=en_EN", HF_KEY)
            seen: list[Any] = []

            async def call_back(payload: dict[str, Any]) -> None:
                # A listener that calls HostFact from inside the hook: the new row is not committed yet, and a
                # write waits for the running API call's lock, then gives up.
                if payload["action"] == "invoice_is_created":
                    seen.append(await hf.call("invoice", "show", Identifier=payload["data"]["id"]))
                    seen.append(await hf.call("invoice", "markaspaid", Identifier=payload["data"]["id"]))
                    seen.append(await hf.call("debtor", "list"))

            receiver.on_hook = call_back
            seed_company_x(source)
            await sent_invoice(hf)
    assert seen[0]["errors"] == ["Invalid identifier for invoice"]
    assert seen[1]["errors"] == [
        "API has concurrent calls, but the queue was not able to fix them in 5 seconds."
    ]
    assert seen[1]["controller"] == "invalid" and seen[2]["status"] == "success"
    assert source.invoice(1)["Status"] == 2


# -- standalone ----------------------------------------------------------------------------------------------


def test_command_line_help_and_start() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "tasks.simulator", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "--admin" in helped.stdout and "--hooks-url" in helped.stdout
    command = [
        sys.executable,
        "-m",
        "tasks.simulator",
        "--port",
        "0",
        "--admin",
        "a:hostfact:k",
        "--admin",
        "b:wefact:k",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        try:
            first = process.stdout.readline()
            assert first.startswith("factsync simulator listening on http://127.0.0.1:")
            lines = [process.stdout.readline() for _ in range(4)]
            assert "/a/api/v2/" in lines[0] and "/b/api/v2/" in lines[2]
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0
