"""The planner alone: which step a (source, mirror) pair asks for, and that the steps converge.

Pure: no Redis, no HTTP. `predict` is what a dry run reports and what a `markaspaid` leaves behind, so it must
agree with `next_step`: applying each step's prediction has to end in no step at all.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.invoice import ZERO, Invoice, Line, Status
from tasks.plan import (
    AddLines,
    CreateMirror,
    Credit,
    EditHeader,
    Finalise,
    MarkPaid,
    MarkUnpaid,
    Pay,
    RemoveLines,
    Step,
    next_step,
    predict,
)

HOSTING = Line("Hosting", Decimal(1), Decimal(100), Decimal(21))
DOMAIN = Line("Domain", Decimal(1), Decimal(15), Decimal(21))
SETUP = Line("Setup", Decimal(2), Decimal(50), Decimal(9))


def invoice(
    status: Status = Status.OPEN, paid: str = "0", lines: tuple[Line, ...] = (HOSTING, DOMAIN)
) -> Invoice:
    return Invoice(
        id="1",
        code="F0001",
        status=status,
        party="DB0001",
        date="2026-11-01",
        term=14,
        amount_incl=Decimal("139.15"),
        amount_paid=Decimal(paid),
        lines=lines,
        pay_date="2026-11-20" if status is Status.PAID else "",
    )


def mirrored(source: Invoice, **changes: object) -> Invoice:
    return replace(source, id="77", **changes)  # type: ignore[arg-type]


SOURCE = invoice()

TABLE: list[tuple[str, Invoice, Invoice | None, Step | None]] = [
    ("no mirror", SOURCE, None, CreateMirror()),
    ("in step", SOURCE, mirrored(SOURCE), None),
    ("a draft mirror of a sent invoice", SOURCE, mirrored(SOURCE, status=Status.DRAFT), Finalise()),
    ("another term", SOURCE, mirrored(SOURCE, term=30), EditHeader("2026-11-01", 14)),
    (
        "another discount",
        replace(SOURCE, discount=Decimal(10)),
        mirrored(SOURCE),
        EditHeader("2026-11-01", 14, Decimal(10), "excl"),
    ),
    ("a line missing", SOURCE, mirrored(SOURCE, lines=(HOSTING,)), AddLines((DOMAIN,))),
    ("a line too many", SOURCE, mirrored(SOURCE, lines=(HOSTING, DOMAIN, SETUP)), RemoveLines((SETUP,))),
    (
        "a line changed: add first, a target refuses to lose every line",
        invoice(lines=(HOSTING,)),
        mirrored(SOURCE, lines=(DOMAIN,)),
        AddLines((HOSTING,)),
    ),
    ("a part payment", invoice(Status.PARTLY_PAID, "5.25"), mirrored(SOURCE), Pay(Decimal("5.25"), "", "")),
    (
        "paid in full",
        invoice(Status.PAID, "139.15"),
        mirrored(SOURCE),
        Pay(Decimal("139.15"), "2026-11-20", ""),
    ),
    ("marked paid without payments", invoice(Status.PAID), mirrored(SOURCE), MarkPaid("2026-11-20")),
    ("reopened", SOURCE, mirrored(invoice(Status.PAID)), MarkUnpaid()),
    ("a payment undone", SOURCE, mirrored(invoice(Status.PARTLY_PAID, "10")), Pay(Decimal(-10), "", "")),
    ("credited", invoice(Status.CANCELLED), mirrored(SOURCE), Credit()),
    ("a credited mirror is left alone", SOURCE, mirrored(invoice(Status.CANCELLED)), None),
]


@pytest.mark.parametrize(
    ("source", "mirror", "step"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_next_step(source: Invoice, mirror: Invoice | None, step: Step | None) -> None:
    assert next_step(source, mirror) == step


def test_a_removal_is_predicted_as_the_mirror_less_those_lines() -> None:
    mirror = mirrored(SOURCE, lines=(HOSTING, DOMAIN, SETUP))
    after = predict(RemoveLines((SETUP,)), SOURCE, mirror)
    assert after.lines == (HOSTING, DOMAIN)
    assert next_step(SOURCE, after) is None


lines = st.lists(st.sampled_from([HOSTING, DOMAIN, SETUP]), min_size=1, max_size=4).map(tuple)
paid = st.sampled_from([ZERO, Decimal("5.25"), Decimal("139.15"), Decimal(200)])
TOTAL = Decimal("139.15")


def status_for(amount: Decimal, marked_paid: bool) -> Status:
    """The status HostFact gives an invoice with ``amount`` booked (invoice::partpayment, markaspaid): paid
    when the payments cover it or when it was marked paid; an overpayment stays partly paid."""
    if marked_paid or amount == TOTAL:
        return Status.PAID
    return Status.OPEN if amount == ZERO else Status.PARTLY_PAID


@st.composite
def pairs(draw: st.DrawFn) -> tuple[Invoice, Invoice | None]:
    amount = draw(paid)
    if draw(st.integers(0, 5)) == 0:
        status, amount = Status.CANCELLED, ZERO
    else:
        status = status_for(amount, draw(st.booleans()))
    source = replace(
        invoice(status, str(amount), draw(lines)),
        term=draw(st.sampled_from([14, 30])),
        discount=draw(st.sampled_from([ZERO, Decimal(10)])),
    )
    if draw(st.booleans()):
        return source, None
    booked = draw(paid)
    draft = draw(st.integers(0, 4)) == 0
    mirror_status = Status.DRAFT if draft else status_for(booked, draw(st.booleans()))
    mirror = replace(
        invoice(mirror_status, "0" if draft else str(booked)),
        id="77",
        lines=draw(lines),
        term=draw(st.sampled_from([14, 30])),
    )
    return source, mirror


@settings(max_examples=300, deadline=None)
@given(pairs())
def test_predicted_steps_converge(pair: tuple[Invoice, Invoice | None]) -> None:
    source, mirror = pair
    for _ in range(12):
        step = next_step(source, mirror)
        if step is None:
            return
        mirror = predict(step, source, mirror)
    raise AssertionError(f"no convergence in 12 steps from {pair}; last step {step}")
