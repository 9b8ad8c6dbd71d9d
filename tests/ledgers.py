"""Ledger checks for the end-to-end tests: does the target mirror the source, was anything booked twice?

The `sales` route's contract, as the checks read it:

- every source invoice that is not a draft (Status 0, "[concept]..." code) and not a credit note (Status 8)
  has exactly one mirror in the target: ``ReferenceNumber`` = the marker ``[factsync:<source>:<source
  Identifier>]`` (design invariant 6), same InvoiceCode, DebtorCode, Date, Term, lines (Description, Number,
  PriceExcl, TaxPercentage), amounts and AmountPaid, and the mirrored status (1, 2 → 2; 3 → 3; 4 → 4; 9 → 9);
- a credited source invoice (Status 9) has, besides its mirror at Status 9, exactly one Status 8 credit
  invoice in the target carrying the same marker, for the negated amount;
- drafts are not mirrored; the debtor exists in the target once, with the same DebtorCode.

Two ways to see a double booking (design invariant 2):

- `booked_payments`: the sum of the ``partpayment`` calls an administration applied, per invoice, from its
  call log. Where the source's AmountPaid only ever moved by partpayments, the target must have booked
  exactly the same sum.
- `PaymentTrace` + `payment_history_problems`: every AmountPaid the target mirror takes must be a value the
  source invoice held at or before that moment, in the source's order. A payment computed as
  ``source AmountPaid - target AmountPaid`` under the document's lock always lands on such a value; booking
  the same difference twice (two workers, a retry after a lost answer, a replayed hook delta) lands on a
  value the source never had, or had only later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from tasks.invoice import marker as product_marker
from tasks.simulator import SimAdministration

Record = dict[str, Any]

# How a source status shows on its mirror.
MIRRORED_STATUS = {1: 2, 2: 2, 3: 3, 4: 4, 9: 9}


def _mirrored_status(original: Record) -> int | None:
    """The Status the mirror of ``original`` can have. HostFact's back office leaves an invoice at Status 3
    with nothing paid after a partial credit of 0.00 (invoice::createCreditInvoice raises AmountPaid by the
    credit and sets 3); no API call gives a target that (partpayment: a total of 0 is Status 2), so its
    mirror is open, at 2."""
    if original["Status"] == 3 and _decimal(original["AmountPaid"]) == 0:
        return 2
    return MIRRORED_STATUS.get(original["Status"])


def marker(source_name: str, identifier: int) -> str:
    """The ReferenceNumber a mirror carries: where it comes from (design invariant 6), in the product's own
    format (``[factsync:hostfact:12]``), so the check follows the format but pins that it is there."""
    return product_marker(source_name, str(identifier))


def is_draft(invoice: Mapping[str, Any]) -> bool:
    return invoice["Status"] == 0 or str(invoice["InvoiceCode"]).startswith("[concept")


def is_credit_note(invoice: Mapping[str, Any]) -> bool:
    return bool(invoice["Status"] == 8)


def mirrored_invoices(source: SimAdministration) -> list[Record]:
    """The source invoices that must have a mirror of their own: not drafts, not credit notes."""
    return [
        inv for _, inv in sorted(source.invoices.items()) if not is_draft(inv) and not is_credit_note(inv)
    ]


def mirrors_of(target: SimAdministration, source_name: str, identifier: int) -> list[Record]:
    """Target invoices carrying the source invoice's marker, its Status 8 credit note excepted."""
    mark = marker(source_name, identifier)
    return [
        inv
        for _, inv in sorted(target.invoices.items())
        if inv.get("ReferenceNumber") == mark and not is_credit_note(inv)
    ]


def credit_notes_of(target: SimAdministration, source_name: str, identifier: int) -> list[Record]:
    """Status 8 target invoices carrying the marker of the (credited) source invoice."""
    mark = marker(source_name, identifier)
    return [
        inv
        for _, inv in sorted(target.invoices.items())
        if inv.get("ReferenceNumber") == mark and is_credit_note(inv)
    ]


# How a mirror names a subscription line's period (Dutch, as on the invoice): the oracle for
# `tasks.adapters.without_periods`, written out here on purpose.
_UNITS = {
    "d": ("dag", "dagen"),
    "w": ("week", "weken"),
    "m": ("maand", "maanden"),
    "k": ("kwartaal", "kwartalen"),
    "h": ("halfjaar", "halfjaren"),
    "j": ("jaar", "jaar"),
    "t": ("twee jaar", "keer twee jaar"),
}


def lines(invoice: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """An invoice's lines as a mirror must hold them: a subscription line (a target would make a
    subscription of it) as one plain line of all its periods, the period in its description."""
    out = []
    for line in invoice["InvoiceLines"]:
        description, price = str(line["Description"]), _decimal(line["PriceExcl"])
        if line.get("Periodic"):
            periods = int(line["Periods"])
            unit = _UNITS[line["Periodic"]][0 if periods == 1 else 1]
            description = f"{description} ({periods} {unit} vanaf {line['StartPeriod']})"
            price *= periods
        out.append(
            (
                description,
                _decimal(line["Number"]),
                price.normalize(),
                _decimal(line["TaxPercentage"]),
                _decimal(line.get("DiscountPercentage", 0)),
            )
        )
    return out


def priced(invoice: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The lines that carry an amount."""
    return [line for line in lines(invoice) if line[2] != 0]


def describe(admin: SimAdministration, invoice: Mapping[str, Any]) -> str:
    return (
        f"{admin.name} invoice {invoice['Identifier']} ({invoice['InvoiceCode']}, Status {invoice['Status']})"
    )


# -- the mirror ----------------------------------------------------------------------------------------------


def mirror_problems(
    source: SimAdministration, target: SimAdministration, *, source_name: str = "hostfact"
) -> list[str]:
    """Every way the target fails to mirror the source, one readable line each (empty: it mirrors)."""
    problems: list[str] = []
    expected_ids: set[int] = set()
    for original in mirrored_invoices(source):
        where = describe(source, original)
        found = mirrors_of(target, source_name, original["Identifier"])
        if len(found) != 1:
            codes = [describe(target, inv) for inv in found]
            problems.append(
                f"{where}: expected exactly 1 mirror with ReferenceNumber "
                f"{marker(source_name, original['Identifier'])!r} in {target.name}, "
                f"found {len(found)} {codes}"
            )
            expected_ids.update(inv["Identifier"] for inv in found)
            continue
        mirror = found[0]
        expected_ids.add(mirror["Identifier"])
        differences = _invoice_differences(original, mirror, _mirrored_status(original))
        if differences:
            problems.append(f"{where} vs its mirror {describe(target, mirror)}: " + "; ".join(differences))
        problems += _debtor_problems(source, target, original, where)
        notes = credit_notes_of(target, source_name, original["Identifier"])
        partial = partial_credits_of(source, original)
        problems += _partial_credit_problems(target, source_name, partial, where)
        for credit in partial:
            held = credit_notes_of(target, source_name, credit["Identifier"])
            expected_ids.update(note["Identifier"] for note in held)
        if original["Status"] == 9:
            source_notes = [
                inv
                for inv in source.invoices.values()
                if is_credit_note(inv)
                and inv.get("CorrespondingInvoice") == original["Identifier"]
                and inv not in partial
            ]
            if len(notes) != 1:
                problems.append(
                    f"{where} is credited: expected exactly 1 Status 8 credit invoice with its marker in "
                    f"{target.name}, found {len(notes)} {[describe(target, n) for n in notes]}"
                )
            else:
                note = notes[0]
                if note["AmountIncl"] != -original["AmountIncl"]:
                    problems.append(
                        f"{where}: the credit invoice {describe(target, note)} has AmountIncl "
                        f"{note['AmountIncl']}, expected {-original['AmountIncl']}"
                    )
                # Each credit invoice is made by its own administration, which may add a text line at 0
                # (HostFact's CREDIT_TEXT): the lines that carry an amount must agree.
                if len(source_notes) == 1 and priced(note) != priced(source_notes[0]):
                    problems.append(
                        f"{where}: the credit invoice {describe(target, note)} has lines {priced(note)}, "
                        f"the source's credit invoice {priced(source_notes[0])}"
                    )
        elif notes:
            problems.append(
                f"{where} is not credited (Status {original['Status']}), yet {target.name} has credit "
                f"invoice(s) with its marker: {[describe(target, n) for n in notes]}"
            )
        expected_ids.update(note["Identifier"] for note in notes)
    for draft in (inv for _, inv in sorted(source.invoices.items()) if is_draft(inv)):
        found = mirrors_of(target, source_name, draft["Identifier"])
        if found:
            problems.append(
                f"{describe(source, draft)} is a draft and must not be mirrored, yet {target.name} has "
                f"{[describe(target, inv) for inv in found]}"
            )
    extra = [inv for i, inv in sorted(target.invoices.items()) if i not in expected_ids]
    if extra:
        problems.append(
            f"{target.name} has invoices that mirror nothing they should: "
            + ", ".join(
                f"{describe(target, inv)} ReferenceNumber={inv.get('ReferenceNumber')!r}" for inv in extra
            )
        )
    return problems


def partial_credits_of(source: SimAdministration, original: Record) -> list[Record]:
    """The source's partial credit invoices of ``original``: every credit invoice of it but a full credit's,
    which is the last one made (nothing can be credited after it)."""
    made = [
        inv
        for _, inv in sorted(source.invoices.items())
        if is_credit_note(inv) and inv.get("CorrespondingInvoice") == original["Identifier"]
    ]
    return made[:-1] if original["Status"] == 9 else made


def _partial_credit_problems(
    target: SimAdministration, source_name: str, partial: list[Record], where: str
) -> list[str]:
    problems: list[str] = []
    for credit in partial:
        notes = credit_notes_of(target, source_name, credit["Identifier"])
        if len(notes) != 1:
            problems.append(
                f"{where} has partial credit {credit['InvoiceCode']}: expected exactly 1 Status 8 credit "
                f"note with its marker in {target.name}, found {[describe(target, n) for n in notes]}"
            )
            continue
        note = notes[0]
        if (note["InvoiceCode"], note["AmountIncl"], priced(note)) != (
            credit["InvoiceCode"],
            credit["AmountIncl"],
            priced(credit),
        ):
            problems.append(
                f"{where}: credit note {describe(target, note)} ({note['AmountIncl']}, {priced(note)}) is "
                f"not the source's partial credit {credit['InvoiceCode']} "
                f"({credit['AmountIncl']}, {priced(credit)})"
            )
    return problems


def assert_target_mirrors_source(
    source: SimAdministration, target: SimAdministration, *, source_name: str = "hostfact"
) -> None:
    """Fail, listing every difference, unless the target mirrors the source's sales invoices exactly."""
    problems = mirror_problems(source, target, source_name=source_name)
    if problems:
        raise AssertionError(
            f"{target.name} does not mirror {source.name} ({len(problems)} problem(s)):\n- "
            + "\n- ".join(problems)
        )


def _invoice_differences(original: Record, mirror: Record, status: int | None) -> list[str]:
    out: list[str] = []
    for key in ("InvoiceCode", "DebtorCode", "Date", "Term"):
        if mirror.get(key) != original.get(key):
            out.append(f"{key} {mirror.get(key)!r} != source {original.get(key)!r}")
    if mirror["Status"] != status:
        out.append(f"Status {mirror['Status']} != {status} (source Status {original['Status']})")
    for key in ("AmountExcl", "AmountTax", "AmountIncl", "AmountPaid", "Discount"):
        if _decimal(mirror[key]) != _decimal(original[key]):
            out.append(f"{key} {mirror[key]} != source {original[key]}")
    if mirror.get("VatCalcMethod") != original.get("VatCalcMethod"):
        out.append(f"VatCalcMethod {mirror.get('VatCalcMethod')} != source {original.get('VatCalcMethod')}")
    # Invariant 9: a mirror is never collected by direct debit, nor given the target's own discounts.
    if mirror.get("Authorisation") != "no" or mirror.get("IgnoreDiscount") != "yes":
        out.append(
            f"not inert: Authorisation {mirror.get('Authorisation')}, "
            f"IgnoreDiscount {mirror.get('IgnoreDiscount')}"
        )
    if lines(mirror) != lines(original):
        out.append(f"lines {lines(mirror)} != source {lines(original)}")
    return out


def _debtor_problems(
    source: SimAdministration, target: SimAdministration, original: Record, where: str
) -> list[str]:
    code = source.debtor(original["Debtor"])["DebtorCode"]
    found = [d for d in target.debtors.values() if d["DebtorCode"] == code]
    if len(found) != 1:
        return [f"{where}: expected 1 debtor {code!r} in {target.name}, found {len(found)}"]
    return []


# -- payments booked -----------------------------------------------------------------------------------------


def invoice_of_call(admin: SimAdministration, params: Mapping[str, Any]) -> int | None:
    """The invoice an invoice call names: ``Identifier`` when > 0, else its exact ``InvoiceCode``."""
    raw = params.get("Identifier", params.get("identifier"))
    try:
        identifier = int(str(raw)) if raw not in (None, "") else 0
    except ValueError:
        identifier = 0
    if identifier > 0:
        return identifier
    code = params.get("InvoiceCode", params.get("invoicecode"))
    if code:
        found = admin.store.find("invoices", "InvoiceCode", str(code))
        return None if found is None else int(found["Identifier"])
    return None


def applied_payment_calls(admin: SimAdministration, invoice_id: int) -> list[Any]:
    """The ``invoice partpayment`` calls the administration applied to this invoice, in arrival order."""
    return [
        call
        for call in admin.calls
        if (call.controller, call.action) == ("invoice", "partpayment")
        and call.applied
        and invoice_of_call(admin, call.params) == invoice_id
    ]


def booked_payments(admin: SimAdministration) -> dict[int, Decimal]:
    """Per invoice: the sum of the AmountPaid of every APPLIED ``partpayment`` (a lost answer counts: the
    payment was booked), plus an AmountPaid given to an applied ``invoice add`` (a mirror created paid)."""
    booked: dict[int, Decimal] = {}
    for call in admin.calls:
        if call.controller != "invoice" or not call.applied:
            continue
        if call.action not in ("partpayment", "add"):
            continue
        amount = call.params.get("AmountPaid", call.params.get("amountpaid"))
        if call.action == "add" and amount in (None, ""):
            continue
        invoice = invoice_of_call(admin, call.params)
        if invoice is None:
            continue
        paid = _decimal(amount) if amount not in (None, "") else Decimal(0)
        booked[invoice] = booked.get(invoice, Decimal(0)) + paid
    return booked


@dataclass
class PaidChange:
    """An invoice's AmountPaid after one applied write: when (monotonic seconds) and by which action."""

    at: float
    value: Decimal
    action: str


@dataclass
class PaymentTrace:
    """The AmountPaid history of every invoice of one administration, recorded as the writes apply."""

    admin: SimAdministration
    changes: dict[int, list[PaidChange]] = field(default_factory=dict)

    def history(self, invoice_id: int) -> list[PaidChange]:
        return self.changes.get(invoice_id, [])

    def reset_by_other_than_partpayment(self, invoice_id: int) -> bool:
        """True when something other than a partpayment moved AmountPaid (markasunpaid or credit zero it)."""
        return any(change.action != "invoice.partpayment" for change in self.history(invoice_id)[1:])

    def _observe(self, action: str) -> None:
        now = time.monotonic()
        for identifier, invoice in self.admin.invoices.items():
            value = _decimal(invoice["AmountPaid"])
            history = self.changes.setdefault(identifier, [])
            if not history or history[-1].value != value:
                history.append(PaidChange(now, value, action))


def trace_payments(admin: SimAdministration) -> PaymentTrace:
    """Record every AmountPaid an invoice of ``admin`` takes, at the moment the write applies.

    Wraps the administration's ``execute`` (what the simulator's HTTP handler calls for each API call), so
    the order is the order in which the simulator applied the writes, latency faults and all.
    """
    trace = PaymentTrace(admin)
    trace._observe("(before)")
    original: Callable[..., Any] = admin.execute

    def execute(controller: str, action: str, params: Mapping[str, Any]) -> Any:
        outcome = original(controller, action, params)
        if getattr(outcome, "changed", False):
            trace._observe(f"{controller}.{action}")
        return outcome

    admin.execute = execute  # type: ignore[method-assign]
    backoffice: Callable[..., Any] = admin.backoffice

    def in_the_back_office(action: str, **params: Any) -> Any:
        outcome = backoffice(action, **params)
        trace._observe(f"backoffice.{action}")
        return outcome

    admin.backoffice = in_the_back_office  # type: ignore[method-assign]
    return trace


def payment_history_problems(
    source: SimAdministration,
    target: SimAdministration,
    source_trace: PaymentTrace,
    target_trace: PaymentTrace,
    *,
    source_name: str = "hostfact",
) -> list[str]:
    """Double bookings, one readable line per invoice (empty: none).

    1. Every AmountPaid the mirror takes is one the source invoice held at or before that moment, and in
       the source's order (the target's history is a time-consistent subsequence of the source's).
    2. Where the source's AmountPaid moved only by partpayments, the target's booked partpayments sum to
       exactly the source's.
    """
    problems: list[str] = []
    source_booked = booked_payments(source)
    target_booked = booked_payments(target)
    for original in mirrored_invoices(source):
        found = mirrors_of(target, source_name, original["Identifier"])
        if len(found) != 1:
            continue  # mirror_problems reports it
        mirror = found[0]
        where = f"{describe(source, original)} / mirror {describe(target, mirror)}"
        source_history = source_trace.history(original["Identifier"])
        target_history = target_trace.history(mirror["Identifier"])
        # A partial credit's amount is booked apart from the money paid beside it, so the mirror may pass
        # through a paid amount the source never showed; its end state is mirror_problems' business.
        credited = bool(partial_credits_of(source, original))
        bad = None if credited else _first_unexplained(source_history, target_history)
        if bad is not None:
            origin = source_history[0].at if source_history else bad.at
            problems.append(
                f"{where}: the mirror's AmountPaid became {bad.value} by {bad.action} at "
                f"+{bad.at - origin:.3f} s, a value the source did not hold by then in that order. "
                f"Source AmountPaid history: {_history_text(source_history, origin)}; "
                f"mirror: {_history_text(target_history, origin)}"
            )
        if not source_trace.reset_by_other_than_partpayment(original["Identifier"]):
            paid_in_source = source_booked.get(original["Identifier"], Decimal(0))
            paid_in_target = target_booked.get(mirror["Identifier"], Decimal(0))
            if paid_in_target != paid_in_source:
                amounts = [
                    str(c.params.get("AmountPaid"))
                    for c in applied_payment_calls(target, mirror["Identifier"])
                ]
                problems.append(
                    f"{where}: payments booked in {target.name} sum to {paid_in_target} {amounts}, "
                    f"the source's partpayments to {paid_in_source}"
                )
    return problems


def assert_no_double_booking(
    source: SimAdministration,
    target: SimAdministration,
    source_trace: PaymentTrace,
    target_trace: PaymentTrace,
    *,
    source_name: str = "hostfact",
) -> None:
    problems = payment_history_problems(source, target, source_trace, target_trace, source_name=source_name)
    if problems:
        raise AssertionError("payments were booked twice or out of step:\n- " + "\n- ".join(problems))


def _first_unexplained(source: list[PaidChange], target: list[PaidChange]) -> PaidChange | None:
    # Greedy earliest match is optimal for "is a subsequence", and stays so with the time bound: a source
    # state that is early enough for one target state is early enough for every later one.
    position = 0
    for change in target:
        match = next(
            (
                index
                for index in range(position, len(source))
                if source[index].value == change.value and source[index].at <= change.at
            ),
            None,
        )
        if match is None:
            return change
        position = match
    return None


def _history_text(history: Iterable[PaidChange], origin: float) -> str:
    return ", ".join(f"{c.value} ({c.action} +{c.at - origin:.3f} s)" for c in history) or "(none)"


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise AssertionError(f"{value!r} is not an amount") from None
