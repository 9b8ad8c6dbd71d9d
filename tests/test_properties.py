"""Property test: whatever HostFact does, however its hooks arrive and however the target fails, the target
ends up mirroring the source, with no payment booked twice.

Invariants pinned (shared/design.md): 1 level-triggered (duplicates, re-deliveries, reordering, retries and
re-enqueues are safe), 2 no double booking, 3 nothing accepted is lost (every accepted hook settles: done,
ignored or failed with a reason), 4 one writer per document (several workers race for the same invoices),
6 the marker on every mirror.

How Hypothesis drives async code here: pytest-asyncio knows ``@given`` on an ``async def`` test (its
``AsyncHypothesisTest`` item) and runs each example as one coroutine on the session's event loop, so no
thread or second loop is needed. Function-scoped fixtures would be shared by all examples, so the test uses
only the session's ``redis_url`` and builds everything else per example in `harness()`: a flushed Redis, the
simulator, a hook relay, the listener and 2-3 workers, all torn down before the next example.

Hooks: HostFact's hooks go to `HookRelay`, which keeps the signed requests and answers 202 (as the listener
would). The scenario decides when captured hooks reach the real listener: in shuffled batches, some twice with
the same webhook-id (a re-delivery the listener drops) and some re-signed with a fresh webhook-id (a real
duplicate event). Hooks not yet delivered when a batch goes out arrive later, so events come late and out of
order.

Shrinking is off: each example runs a whole pipeline (0.2-1 s), shrinking a failure would take minutes, and
timing makes replays nondeterministic anyway. Scenarios are short, and a failure prints the scenario, the
operations as HostFact took them, the fault plan, every problem found, and a blob for
``@reproduce_failure``. ``pytest --hypothesis-show-statistics`` shows what the examples exercised (payments
booked in the target, answers lost, credits).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import hypothesis
import pytest
from aiohttp import ClientSession, web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from tasks.client import ApiClient
from tasks.errors import ApiError
from tasks.simulator import SimAdministration, run_simulator
from tasks.simulator.envelope import ApiFailure
from tests.conftest import HOOK_SECRET, SOURCE_KEY, TARGET_KEY, sign
from tests.ledgers import (
    PaymentTrace,
    mirror_problems,
    partial_credits_of,
    payment_history_problems,
    trace_payments,
)
from tests.stack import pipeline_settings
from worker.config import Settings
from worker.runtime import Running, start
from worker.store import FINAL, Event, EventStore
from worker.web.app import create_app

pytestmark = pytest.mark.slow

SETTLE_WITHIN = 30.0

# -- scenarios ---------------------------------------------------------------------------------------------

DESCRIPTIONS = ["Hosting S", "Domain example.nl", "SSL certificate", "Setup fee", "Support hour"]

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("250"), places=2)

plain_lines = st.builds(
    lambda description, number, price, tax: {
        "Description": description,
        "Number": number,
        "PriceExcl": str(price),
        "TaxPercentage": tax,
    },
    st.sampled_from(DESCRIPTIONS),
    st.sampled_from(["1", "2", "3", "0.5"]),
    st.decimals(min_value=Decimal("1"), max_value=Decimal("400"), places=2),
    st.sampled_from(["0", "9", "21"]),
)
# Subscription lines (price per period × Periods) and line discounts, which HostFact counts in the totals.
invoice_lines = st.one_of(
    plain_lines,
    st.builds(
        lambda line, periods, unit, start: (
            line | {"PeriodicType": "period", "Periods": periods, "Periodic": unit, "StartPeriod": start}
        ),
        plain_lines,
        st.sampled_from([1, 3, 12]),
        st.sampled_from(["m", "j", "k"]),
        st.sampled_from(["2026-01-01", "2026-07-15"]),
    ),
    st.builds(
        lambda line, discount: line | {"DiscountPercentage": discount},
        plain_lines,
        st.sampled_from(["10", "12.5", "100"]),
    ),
)

# An invoice is named by its position among the invoices created so far (modulo their number; -1 is the
# newest, and the likeliest, so that operations pile up on one invoice), so any list of operations is a
# valid scenario.
which = st.sampled_from([-1, -1, 0, 1, 2, 3])

create = st.tuples(
    st.just("create"),
    # 0: a draft (sent later, or never: then it is not mirrored); 1: queued; 2: sent.
    st.sampled_from([0, 1, 2, 2]),
    st.lists(invoice_lines, min_size=1, max_size=3).map(tuple),
    # The invoice's own discount and VAT calculation.
    st.sampled_from(
        [{}, {}, {"Discount": "10"}, {"VatCalcMethod": "incl"}, {"Discount": "5", "VatCalcMethod": "incl"}]
    ),
)
# Which operation comes next, weighted: payments are what must never be booked twice, and a credit ends
# an invoice's story, so it comes rarely.
KINDS = (
    ("pay",) * 5
    + ("create",) * 2
    + ("deliver",) * 2
    + (
        "line",
        "send",
        "remind",
        "markaspaid",
        "markasunpaid",
        "credit",
        "credit_partly",
        "credit_partly",
    )
)
BY_KIND: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    # amount: that much; rest: exactly what is open; over: open + x; refund: minus x.
    "pay": st.tuples(
        st.just("pay"), which, st.sampled_from(["amount", "amount", "rest", "over", "refund"]), amounts
    ),
    "create": create,
    # Deliver this share of the hooks captured so far (shuffled, with duplicates); the rest wait.
    "deliver": st.tuples(st.just("deliver"), st.sampled_from([0.3, 0.6, 1.0])),
    "line": st.tuples(st.just("line"), which, invoice_lines),
    **{kind: st.tuples(st.just(kind), which) for kind in ("send", "remind", "markaspaid", "markasunpaid")},
    "credit": st.tuples(st.just("credit"), which),
    # HostFact's back office credits this share of the invoice's first line (all of a one-line invoice: a
    # full credit).
    "credit_partly": st.tuples(
        st.just("credit_partly"), which, st.sampled_from([Decimal("0.5"), Decimal(1)])
    ),
}
operations = st.sampled_from(KINDS).flatmap(lambda kind: BY_KIND[kind])

# Faults of the target besides lost answers and latency, each on a share of all calls.
fault_rules = st.lists(
    st.tuples(
        st.sampled_from(["http_500", "http_503", "timeout", "empty_body"]),
        st.sampled_from([0.05, 0.1, 0.2]),
    ),
    max_size=2,
)


@dataclass(frozen=True)
class Scenario:
    operations: tuple[tuple[Any, ...], ...]
    faults: tuple[tuple[str, float], ...]
    # The share of target writes that are applied but whose answer is lost.
    lost_answers: float
    # The share of target calls delayed by 50 ms.
    latency: float
    # After each operation, deliver this share of the waiting hooks (0: only at "deliver" and at the end).
    follow: float
    # Seconds to let the workers run after each operation, so syncs see the states in between.
    pause: float
    workers: int
    redeliver_same_id: float
    redeliver_fresh_id: float
    seed: int

    def __str__(self) -> str:
        ops = "\n    ".join(repr(op) for op in self.operations)
        return (
            f"Scenario(workers={self.workers}, faults={list(self.faults)}, lost_answers={self.lost_answers}, "
            f"latency={self.latency}, "
            f"follow={self.follow}, pause={self.pause}, "
            f"redeliver_same_id={self.redeliver_same_id}, redeliver_fresh_id={self.redeliver_fresh_id}, "
            f"seed={self.seed}):\n    {ops}"
        )


scenarios = st.builds(
    Scenario,
    # Always start with an invoice, so the operations after it have one to act on.
    operations=st.tuples(create, st.lists(operations, min_size=4, max_size=14)).map(
        lambda drawn: (drawn[0], *drawn[1])
    ),
    faults=fault_rules.map(tuple),
    # Hypothesis takes the first value of a sampled_from for the simplest and draws it most: the first
    # values are the interesting ones.
    lost_answers=st.sampled_from([0.25, 0.4, 0.1, 0.0]),
    latency=st.sampled_from([0.2, 0.5, 0.0]),
    follow=st.sampled_from([0.5, 1.0, 0.0]),
    pause=st.sampled_from([0.03, 0.0, 0.08]),
    workers=st.integers(min_value=2, max_value=3),
    redeliver_same_id=st.sampled_from([0.2, 0.5, 0.0]),
    redeliver_fresh_id=st.sampled_from([0.3, 0.6, 0.0]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)


# -- the hook relay ----------------------------------------------------------------------------------------


@dataclass
class CapturedHook:
    """A hook as HostFact's forwarder posted it: the body and its Standard Webhooks headers."""

    body: bytes
    headers: dict[str, str]


@dataclass
class HookRelay:
    """Stands where the listener would: keeps each signed hook HostFact posts and answers 202."""

    captured: list[CapturedHook] = field(default_factory=list)
    waiting: list[CapturedHook] = field(default_factory=list)
    # Event ids the listener answered 202 with: each must end up settled in the store.
    accepted: set[str] = field(default_factory=set)

    async def receive(self, request: web.Request) -> web.Response:
        headers = {
            name: request.headers[name]
            for name in ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature")
        }
        hook = CapturedHook(await request.read(), headers)
        self.captured.append(hook)
        self.waiting.append(hook)
        return web.json_response({"captured": True}, status=202)

    async def deliver(
        self,
        session: ClientSession,
        url: str,
        share: float,
        rng: random.Random,
        *,
        same_id: float,
        fresh_id: float,
    ) -> None:
        """Post a random share of the waiting hooks to the listener, shuffled, some of them twice.

        The hooks not taken stay waiting and go out with a later batch: late, and after newer ones.
        """
        taken: list[CapturedHook] = []
        kept: list[CapturedHook] = []
        for hook in self.waiting:
            (taken if share >= 1 or rng.random() < share else kept).append(hook)
        self.waiting = kept
        posts: list[tuple[bytes, dict[str, str], str]] = []
        for hook in taken:
            posts.append((hook.body, hook.headers, "original"))
            if rng.random() < same_id:
                posts.append((hook.body, hook.headers, "re-delivery (same webhook-id)"))
            if rng.random() < fresh_id:
                posts.append((hook.body, sign(hook.body), "duplicate (fresh webhook-id)"))
        rng.shuffle(posts)
        for body, headers, kind in posts:
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.json()
            if response.status == 202:
                if answer["event_id"] in self.accepted:
                    raise AssertionError(f"the listener answered 202 twice with event {answer['event_id']}")
                self.accepted.add(answer["event_id"])
            elif response.status != 200 or not answer.get("duplicate"):
                raise AssertionError(
                    f"the listener refused a {kind} hook {body!r}: {response.status} {answer}"
                )


# -- one pipeline per example ------------------------------------------------------------------------------


@dataclass
class Harness:
    settings: Settings
    store: EventStore
    hostfact: SimAdministration
    wefact: SimAdministration
    source: ApiClient
    relay: HookRelay
    session: ClientSession
    listener: Running
    workers: list[Running]
    source_trace: PaymentTrace
    target_trace: PaymentTrace
    log: list[str] = field(default_factory=list)

    @property
    def hooks_url(self) -> str:
        return f"{self.listener.listener_url}/hooks/hostfact"

    async def events(self) -> list[Event]:
        ids = await self.store.ids(limit=100_000)
        return [e for e in [await self.store.get(i) for i in ids] if e is not None]

    async def settled(self, within: float = SETTLE_WITHIN) -> list[Event]:
        """Wait until every accepted event is done, ignored or failed; fail listing the ones that are not."""
        deadline = time.monotonic() + within
        while True:
            events = await self.events()
            missing = self.relay.accepted - {e.id for e in events}
            if missing:
                raise AssertionError(f"accepted events are gone from the store: {sorted(missing)}")
            if all(e.status in FINAL for e in events):
                return events
            if time.monotonic() > deadline:
                stuck = [(e.id, e.action, e.payload.get("InvoiceCode"), e.status) for e in events]
                stuck = [s for s in stuck if s[3] not in FINAL]
                raise AssertionError(f"{len(stuck)} event(s) did not settle within {within:.0f} s: {stuck}")
            await asyncio.sleep(0.02)


def _settings(redis_url: str, hostfact_url: str, wefact_url: str) -> Settings:
    values = pipeline_settings(redis_url, hostfact_url, wefact_url, 0).model_dump()
    # The shared rate limit is not under test here; a low budget would only make every example slow.
    values["retry"] = {"max_tries": 8, "base_delay": 0.01, "max_delay": 0.05, "max_span": 60}
    values["max_jobs"] = 10
    values["shutdown_grace"] = 2
    return Settings(**values)


@contextlib.asynccontextmanager
async def harness(redis_url: str, scenario: Scenario) -> AsyncIterator[Harness]:
    """One example's factsync, torn down in reverse: workers and listener before the simulator they call."""
    async with contextlib.AsyncExitStack() as stack:
        redis = Redis.from_url(redis_url)
        stack.push_async_callback(redis.aclose)
        await redis.flushdb()
        relay = HookRelay()
        relay_app = web.Application()
        relay_app.router.add_post("/hooks/hostfact", relay.receive)
        relay_runner = web.AppRunner(relay_app, access_log=None)
        await relay_runner.setup()
        stack.push_async_callback(relay_runner.cleanup)
        await web.TCPSite(relay_runner, "127.0.0.1", 0).start()
        host, port = relay_runner.addresses[0][:2]
        hostfact = SimAdministration(
            "hostfact",
            "hostfact",
            SOURCE_KEY,
            hooks_url=f"http://{host}:{port}/hooks/hostfact",
            hook_secret=HOOK_SECRET,
            seed=scenario.seed,
        )
        wefact = SimAdministration("wefact", "wefact", TARGET_KEY, seed=scenario.seed + 1)
        source_trace, target_trace = trace_payments(hostfact), trace_payments(wefact)
        sim = await stack.enter_async_context(run_simulator([hostfact, wefact]))
        session = await stack.enter_async_context(ClientSession())
        config = _settings(redis_url, sim.api_url("hostfact"), sim.api_url("wefact"))
        listener = await start(config, redis_url, app=create_app, work=False)
        stack.push_async_callback(listener.stop)
        workers = []
        for _ in range(scenario.workers):
            workers.append(await start(config, redis_url))
            stack.push_async_callback(workers[-1].stop)
        source = await stack.enter_async_context(ApiClient(config.source("hostfact")))
        store = EventStore.for_settings(redis, config)
        yield Harness(
            config,
            store,
            hostfact,
            wefact,
            source,
            relay,
            session,
            listener,
            workers,
            source_trace,
            target_trace,
        )


# -- running a scenario ------------------------------------------------------------------------------------


async def apply(h: Harness, op: tuple[Any, ...], created: list[int], rng: random.Random, s: Scenario) -> None:
    kind = op[0]
    if kind == "deliver":
        await h.relay.deliver(
            h.session, h.hooks_url, op[1], rng, same_id=s.redeliver_same_id, fresh_id=s.redeliver_fresh_id
        )
        h.log.append(f"deliver {op[1]:.0%} of the waiting hooks")
        return
    if kind == "create":
        debtor_code = h.hostfact.debtors[min(h.hostfact.debtors)]["DebtorCode"]
        params = {"DebtorCode": debtor_code, "InvoiceLines": list(op[2]), "Status": op[1], **op[3]}
        answer = await h.source.call("invoice", "add", params)
        created.append(int(answer["invoice"]["Identifier"]))
        h.log.append(f"create {answer['invoice']['InvoiceCode']} Status {op[1]} {op[3]} lines {list(op[2])}")
        return
    identifier = created[op[1] % len(created)]
    invoice = h.hostfact.invoice(identifier)
    label = f"{invoice['InvoiceCode']} (id {identifier}, Status {invoice['Status']})"
    call: tuple[str, str, dict[str, Any]]
    if kind == "credit_partly":
        first = invoice["InvoiceLines"][0]
        numbers = {first["Identifier"]: first["Number"] * op[2]}
        try:
            credit = await h.hostfact.credit_partly(identifier, numbers)
        except ApiFailure as exc:
            h.log.append(f"credit partly {label} {numbers}: refused ({'; '.join(exc.errors)})")
            return
        h.log.append(f"credit partly {label} {numbers}: ok, {credit['InvoiceCode']} {credit['AmountIncl']}")
        return
    if kind == "line":
        if invoice["Status"] not in (0, 1, 2, 3):
            # HostFact's API takes lines on a paid or credited invoice too, but no bookkeeper edits a
            # closed invoice; a credited one could then no longer match its credit note.
            h.log.append(f"invoiceline add {label}: skipped, the invoice is closed")
            return
        call = ("invoiceline", "add", {"Identifier": identifier, "InvoiceLines": [op[2]]})
    elif kind == "send":
        call = ("invoice", "sendbyemail", {"Identifier": identifier})
    elif kind == "remind":
        call = ("invoice", "sendreminderbyemail", {"Identifier": identifier})
    elif kind == "pay":
        open_amount: Decimal = invoice["AmountIncl"] - invoice["AmountPaid"]
        amount = {
            "amount": op[3],
            "rest": open_amount,
            "over": open_amount + op[3],
            "refund": -op[3],
        }[op[2]]
        call = ("invoice", "partpayment", {"Identifier": identifier, "AmountPaid": str(amount)})
    else:
        call = ("invoice", kind, {"Identifier": identifier})
    try:
        await h.source.call(*call)
    except ApiError as exc:
        # HostFact refused (paying a draft, crediting twice, ...): nothing changed and no hook fired.
        h.log.append(f"{call[0]} {call[1]} {label} {_brief(call[2])}: refused ({exc.message})")
        return
    h.log.append(f"{call[0]} {call[1]} {label} {_brief(call[2])}: ok")


def _brief(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "Identifier")


def _inject_faults(wefact: SimAdministration, scenario: Scenario) -> None:
    # The first rule that fires on a call wins.
    if scenario.lost_answers:
        # The write is applied and its answer lost: the case where a blind retry books twice.
        wefact.faults.inject("lost_answer", writes_only=True, probability=scenario.lost_answers)
    if scenario.latency:
        # 50 ms before the call is carried out: widens the window in which two syncs of one document
        # would both read the mirror before either pays, were the lease not keeping them apart.
        wefact.faults.inject("latency", seconds=0.05, probability=scenario.latency)
    for kind, probability in scenario.faults:
        if kind == "timeout":
            # Hang 0.2 s, then drop the line unanswered (not applied).
            wefact.faults.inject("timeout", seconds=0.2, probability=probability)
        else:
            wefact.faults.inject(kind, probability=probability)  # type: ignore[arg-type]


async def _settle_and_requeue(h: Harness, scenario: Scenario) -> tuple[list[str], list[Event]]:
    """Settle; failed events need a reason, and need a fault that caused them. Then, with the faults gone,
    re-enqueue the failed ones and settle again: now every event must end done or ignored."""
    problems: list[str] = []
    events = await h.settled()
    failed = [e for e in events if e.status == "failed"]
    for event in failed:
        if not event.reason:
            problems.append(f"event {event.id} ({event.action}) failed without a reason: {event}")
        elif not scenario.faults and not scenario.lost_answers:
            problems.append(
                f"event {event.id} {event.action} {event.payload.get('InvoiceCode')} failed although the "
                f"target never failed (latency at most): {event.reason}"
            )
    h.wefact.faults.clear()
    for event in failed:
        previous, job = await h.store.requeue(event.id, by="test_properties")
        if not job:
            problems.append(f"re-enqueue of failed event {event.id} did nothing (was {previous})")
    events = await h.settled()
    for event in events:
        if event.status not in ("done", "ignored"):
            problems.append(
                f"event {event.id} {event.action} {event.payload.get('InvoiceCode')} is {event.status} "
                f"after a re-enqueue without faults: {event.reason}"
            )
        elif event.status == "ignored" and not event.reason and not event.outcomes:
            problems.append(f"event {event.id} {event.action} was ignored without a reason")
    h.log.append(
        f"{len(events)} events; {len(failed)} failed under faults and were re-enqueued "
        f"({sorted({e.reason[:80] for e in failed})})"
    )
    return problems, events


def _statistics(h: Harness) -> None:
    """What the example exercised, for ``pytest --hypothesis-show-statistics``."""
    if not hypothesis.currently_in_test_context():
        return
    writes = [c for c in h.wefact.calls if c.applied]
    payments = [c for c in writes if (c.controller, c.action) == ("invoice", "partpayment")]
    lost = [c for c in writes if c.fault == "lost_answer"]
    hypothesis.event(f"target partpayments applied: {_bucket(len(payments))}")
    lost_payments = sum(c.fault == "lost_answer" for c in payments)
    hypothesis.event(f"target partpayments whose answer was lost: {_bucket(lost_payments)}")
    hypothesis.event(f"target writes whose answer was lost: {_bucket(len(lost))}")
    credited = sum(inv["Status"] == 8 for inv in h.wefact.invoices.values())
    hypothesis.event(f"credit invoices in the target: {_bucket(credited)}")
    partial = sum(len(partial_credits_of(h.hostfact, inv)) for inv in h.hostfact.invoices.values())
    hypothesis.event(f"partial credits in the source: {_bucket(partial)}")


def _bucket(count: int) -> str:
    return "0" if count == 0 else "1" if count == 1 else "2-4" if count < 5 else "5+"


@settings(
    max_examples=25,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
@given(scenario=scenarios)
async def test_the_target_mirrors_the_source_whatever_the_hooks_faults_and_workers_do(
    redis_url: str, scenario: Scenario
) -> None:
    """Random HostFact activity (invoices with 1-3 lines, drafts sent later, extra lines, sends and
    reminders, payments including overpayments and refunds, markaspaid/markasunpaid, credits), hooks
    delayed, reordered and duplicated, the WeFact target failing at random (5xx, dropped connections,
    bodies that are not JSON, writes applied whose answer is lost), 2-3 workers.

    Then: every accepted event settles (failed only with a reason, and done after a re-enqueue once the
    faults are gone), every non-draft source invoice has exactly one mirror equal to it (status, amounts,
    AmountPaid, lines; a credited one also exactly one Status 8 credit invoice for minus its amount), and no
    payment was booked twice (see `tests.ledgers.payment_history_problems`).
    """
    rng = random.Random(scenario.seed)
    async with harness(redis_url, scenario) as h:
        # A Belgian company with a VAT number and a direct-debit mandate, in a WeFact whose own VAT, discount
        # and direct-debit rules are on: mirrors must stay inert (invariant 9).
        h.hostfact.add_debtor(
            CompanyName="Company X",
            EmailAddress="billing@example.com",
            Country="BE",
            TaxNumber="BE0123456789",
            InvoiceAuthorisation="yes",
        )
        rules = h.wefact.store.rules
        rules.vat, rules.discount, rules.direct_debit = True, Decimal(5), True
        _inject_faults(h.wefact, scenario)
        created: list[int] = []
        for op in scenario.operations:
            await apply(h, op, created, rng, scenario)
            if scenario.follow and op[0] != "deliver":
                await h.relay.deliver(
                    h.session,
                    h.hooks_url,
                    scenario.follow,
                    rng,
                    same_id=scenario.redeliver_same_id,
                    fresh_id=scenario.redeliver_fresh_id,
                )
            await asyncio.sleep(scenario.pause)
        await h.relay.deliver(
            h.session,
            h.hooks_url,
            1.0,
            rng,
            same_id=scenario.redeliver_same_id,
            fresh_id=scenario.redeliver_fresh_id,
        )
        problems, _ = await _settle_and_requeue(h, scenario)
        _statistics(h)
        problems += mirror_problems(h.hostfact, h.wefact)
        problems += payment_history_problems(h.hostfact, h.wefact, h.source_trace, h.target_trace)
        if problems:
            raise AssertionError(
                f"{len(problems)} problem(s):\n- "
                + "\n- ".join(problems)
                + f"\n\n{scenario}\n\nwhat happened:\n    "
                + "\n    ".join(h.log)
            )
