"""Ledger adapters: a route's target documents as HostFact/WeFact API calls, and API rows as `Invoice`s.

`SalesLedger` keeps mirrors of sales invoices (controller `invoice`), `PurchaseLedger` purchase invoices
(controller `creditinvoice`). This is the edge where the API's field names live.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final

from tasks.client import ApiClient
from tasks.errors import ApiError, PermanentError, TransientError
from tasks.invoice import ZERO, Invoice, Line, Status, money, number
from tasks.ledger import Applied, IdMap
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
    predict,
)

SALES_STATUSES: Final = {
    0: Status.DRAFT,
    1: Status.OPEN,
    2: Status.OPEN,
    3: Status.PARTLY_PAID,
    4: Status.PAID,
    8: Status.CREDIT,
    9: Status.CANCELLED,
}
PURCHASE_STATUSES: Final = {
    0: Status.DRAFT,
    1: Status.OPEN,
    2: Status.PARTLY_PAID,
    3: Status.PAID,
    8: Status.CREDIT,
    9: Status.CANCELLED,
}
# The debtor's data an invoice carries (HostFact copies it in), enough to create the debtor in a target.
DEBTOR_FIELDS: Final = (
    "CompanyName",
    "Initials",
    "SurName",
    "Sex",
    "Address",
    "ZipCode",
    "City",
    "Country",
    "EmailAddress",
    "TaxNumber",
)
# WeFact's payment methods; a HostFact method outside these is booked as a bank transfer.
WEFACT_PAYMENT_METHODS: Final = frozenset({"wire", "auth", "ideal", "paypal", "cash", "other"})
_NOT_FOUND: Final = ("invalid identifier",)


def parse_invoice(row: Mapping[str, Any], statuses: Mapping[int, Status], party_key: str) -> Invoice:
    lines = tuple(
        Line(
            description=str(line.get("Description", "")),
            quantity=number(line.get("Number", "1")),
            price_excl=number(line.get("PriceExcl", "0")),
            tax_percentage=number(line.get("TaxPercentage", "0")),
            discount_percentage=number(line.get("DiscountPercentage", "0")),
            identifier=str(line.get("Identifier", "")),
        )
        for line in row.get("InvoiceLines") or []
    )
    code = str(row.get("InvoiceCode", ""))
    return Invoice(
        id=str(row["Identifier"]),
        code=code,
        status=statuses.get(int(row.get("Status", 0)), Status.OPEN),
        party=str(row.get(party_key, "")),
        date=str(row.get("Date", ""))[:10],
        term=int(row.get("Term") or 0),
        amount_incl=money(row.get("AmountIncl")),
        amount_paid=money(row.get("AmountPaid")),
        lines=lines,
        pay_date=str(row.get("PayDate") or "")[:10],
        payment_method=str(row.get("PaymentMethod") or ""),
        reference=str(row.get("ReferenceNumber") or ""),
    )


def parse_sales_invoice(row: Mapping[str, Any]) -> Invoice:
    """A HostFact/WeFact sales invoice, with the debtor data it carries."""
    invoice = parse_invoice(row, SALES_STATUSES, "DebtorCode")
    details = {key: str(row[key]) for key in DEBTOR_FIELDS if row.get(key) not in (None, "")}
    return replace(invoice, party_details=details)


# What parsing a malformed answer raises: a missing key, a string where an object belongs, "abc" as an amount.
_MALFORMED: Final = (KeyError, TypeError, ValueError, ArithmeticError, AttributeError)


def parse_answer(
    parse: Callable[[Mapping[str, Any]], Invoice], row: object, *, what: str, exchange: dict[str, Any] | None
) -> Invoice:
    """Parse a document from an answer; an answer that does not hold what the API documents is transient
    (like a body that is not the envelope): retried, and failed with the exchange when it persists."""
    try:
        if not isinstance(row, Mapping):
            raise TypeError(f"{type(row).__name__}, not an object")
        return parse(row)
    except _MALFORMED as exc:
        raise TransientError(
            f"{what} in the answer is not what the API documents ({type(exc).__name__}: {exc})",
            exchange=exchange,
        ) from None


async def read_sales_invoice(client: ApiClient, identifier: int | str) -> Invoice:
    """A sales invoice by id, with the debtor data it carries."""
    answer = await client.call("invoice", "show", {"Identifier": identifier})
    return parse_answer(
        parse_sales_invoice,
        answer.get("invoice"),
        what=f"invoice {identifier}",
        exchange=client.last_exchange,
    )


def _is_not_found(exc: PermanentError) -> bool:
    return any(text in message.lower() for message in exc.errors for text in _NOT_FOUND)


class _ApiLedger:
    """What both adapters share: reading by id or marker, and a journal of the calls made."""

    controller: str
    line_controller: str
    statuses: Mapping[int, Status]
    party_key: str
    paid_keeps_amount: bool

    def __init__(self, client: ApiClient, ids: IdMap, calls: list[str]) -> None:
        self.client = client
        self.ids = ids
        self.calls = calls
        self.name = client.name

    async def call(
        self, controller: str, action: str, params: Mapping[str, Any], note: str = ""
    ) -> dict[str, Any]:
        self.calls.append(f"{self.name}: {controller}.{action}{' ' + note if note else ''}")
        return await self.client.call(controller, action, params)

    def parse(self, row: Mapping[str, Any]) -> Invoice:
        return parse_invoice(row, self.statuses, self.party_key)

    def guarded(self, row: object) -> Invoice:
        return parse_answer(self.parse, row, what=f"a {self.controller}", exchange=self.client.last_exchange)

    def document(self, answer: Mapping[str, Any]) -> Invoice:
        """The document an answer carries under the controller's key."""
        return self.guarded(answer.get(self.controller))

    async def read(self, identifier: str) -> Invoice | None:
        try:
            answer = await self.call(self.controller, "show", {"Identifier": identifier}, identifier)
        except PermanentError as exc:
            if _is_not_found(exc):
                return None
            raise
        return self.document(answer)

    async def find(self, marker: str) -> tuple[Invoice | None, Invoice | None]:
        answer = await self.call(
            self.controller, "list", {"searchat": "ReferenceNumber", "searchfor": marker}, f"marker {marker}"
        )
        # List rows may leave ReferenceNumber out; the bracketed marker makes every hit an exact one.
        rows = [
            row
            for row in answer.get(self.controller + "s") or []
            if row.get("ReferenceNumber", marker) == marker
        ]
        found = [self.guarded(row) for row in rows]
        credit = next((doc for doc in found if doc.status is Status.CREDIT), None)
        listed = next((doc for doc in found if doc.status is not Status.CREDIT), None)
        # List rows carry no lines: read the mirror itself.
        mirror = await self.read(listed.id) if listed else None
        return mirror, credit

    def _line_params(self, line: Line) -> dict[str, Any]:
        params: dict[str, Any] = {
            "Description": line.description,
            "Number": str(line.quantity),
            "PriceExcl": str(line.price_excl),
            "TaxPercentage": str(line.tax_percentage),
        }
        if line.discount_percentage:
            params["DiscountPercentage"] = str(line.discount_percentage)
        return params

    async def apply(self, step: Step, source: Invoice, mirror: Invoice | None, marker: str) -> Applied:
        """The steps both ledgers take alike are here; the rest is each ledger's own (`_apply`)."""
        if isinstance(step, CreateMirror):
            return await self._create(source, marker)
        assert mirror is not None, f"{step} needs a mirror"
        if isinstance(step, EditHeader):
            return await self._edit(mirror, {"Date": step.date, "Term": step.term})
        if isinstance(step, AddLines):
            return await self._with_lines(mirror, "add", [self._line_params(line) for line in step.lines])
        if isinstance(step, RemoveLines):
            return await self._with_lines(
                mirror, "delete", [{"Identifier": line.identifier} for line in step.lines]
            )
        return await self._apply(step, source, mirror, marker)

    async def _create(self, source: Invoice, marker: str) -> Applied:
        raise NotImplementedError

    async def _apply(self, step: Step, source: Invoice, mirror: Invoice, marker: str) -> Applied:
        raise NotImplementedError

    async def _edit(self, mirror: Invoice, fields: dict[str, Any]) -> Applied:
        answer = await self.call(self.controller, "edit", {"Identifier": mirror.id} | fields, mirror.id)
        return Applied(self.document(answer))

    async def _with_lines(self, mirror: Invoice, action: str, lines: list[dict[str, Any]]) -> Applied:
        answer = await self.call(
            self.line_controller,
            action,
            {"Identifier": mirror.id, "InvoiceLines": lines},
            f"{len(lines)} line(s)",
        )
        return Applied(self.document(answer))


class SalesLedger(_ApiLedger):
    """Mirrors of sales invoices (controller `invoice`) in a WeFact or HostFact target."""

    def parse(self, row: Mapping[str, Any]) -> Invoice:
        return parse_sales_invoice(row)

    controller = "invoice"
    line_controller = "invoiceline"
    statuses = SALES_STATUSES
    party_key = "DebtorCode"
    paid_keeps_amount = True

    def _line_params(self, line: Line) -> dict[str, Any]:
        params = super()._line_params(line)
        if self.client.dialect == "wefact":
            # WeFact takes a line's VAT by code; its default codes are V<percentage>.
            params["TaxCode"] = f"V{line.tax_percentage}"
        return params

    async def _apply(self, step: Step, source: Invoice, mirror: Invoice, marker: str) -> Applied:
        ident = {"Identifier": mirror.id}
        if isinstance(step, Finalise):
            return await self._edit(mirror, {"Status": 2, "InvoiceCode": source.code})
        if isinstance(step, Pay):
            params: dict[str, Any] = ident | {"AmountPaid": str(step.amount)}
            if step.pay_date:
                params["PayDate"] = step.pay_date
            if self.client.dialect == "wefact":
                method = step.payment_method if step.payment_method in WEFACT_PAYMENT_METHODS else "wire"
                params["PaymentMethod"] = method
            answer = await self.call("invoice", "partpayment", params, f"{mirror.id} {step.amount}")
            return Applied(self.document(answer))
        if isinstance(step, MarkPaid):
            params = ident | ({"PayDate": step.pay_date} if step.pay_date else {})
            await self.call("invoice", "markaspaid", params, mirror.id)
            return Applied(predict(step, source, mirror), fresh=False)
        if isinstance(step, MarkUnpaid):
            await self.call("invoice", "markasunpaid", ident, mirror.id)
            # How much stays booked depends on the target's rules: read it rather than guess.
            return Applied(await self.read(mirror.id))
        if isinstance(step, Credit):
            answer = await self.call("invoice", "credit", ident, mirror.id)
            credit = self.document(answer)
            return Applied(replace(mirror, status=Status.CANCELLED, amount_paid=ZERO), credit, fresh=False)
        raise TypeError(f"unknown step {step!r}")

    async def _create(self, source: Invoice, marker: str) -> Applied:
        debtor = await self._debtor(source)
        params = {
            "DebtorCode": debtor,
            "InvoiceCode": source.code,
            "Date": source.date,
            "Term": source.term,
            # A mirror is never sent to the debtor by the target: it starts as sent (2), or as a draft.
            "Status": 0 if source.is_draft else 2,
            "ReferenceNumber": marker,
            "InvoiceLines": [self._line_params(line) for line in source.lines],
        }
        try:
            answer = await self.call("invoice", "add", params, source.code)
        except PermanentError as exc:
            if not any("invoice number" in message.lower() for message in exc.errors):
                raise
            raise await self._number_taken(source.code, exc) from exc
        return Applied(self.document(answer))

    async def _number_taken(self, code: str, refused: PermanentError) -> ApiError:
        """Why the target refused the source's number, and whether waiting can help."""
        holder = await self.read_code(code)
        if holder is None:
            return TransientError(f"{code} was taken a moment ago and is free now", exchange=refused.exchange)
        if holder.status is Status.CREDIT and holder.reference.startswith("[factsync:"):
            # A credit invoice the target numbered itself, until its own sync renumbers it.
            return TransientError(
                f"{code} is held by a credit invoice factsync made; it gets its source number shortly",
                exchange=refused.exchange,
            )
        return PermanentError(
            f"number {code} is already used in {self.name} by a document factsync did not make",
            exchange=refused.exchange,
        )

    async def read_code(self, code: str) -> Invoice | None:
        try:
            answer = await self.call("invoice", "show", {"InvoiceCode": code}, code)
        except PermanentError as exc:
            if _is_not_found(exc):
                return None
            raise
        return self.document(answer)

    async def settle_credit(self, credit: Invoice, marker: str, source_credit: Invoice | None) -> Invoice:
        """Give the credit invoice the target made its original's marker and the source credit's number."""
        changes: dict[str, Any] = {}
        if credit.reference != marker:
            changes["ReferenceNumber"] = marker
        if source_credit is not None and credit.code != source_credit.code:
            # The target numbered it from its own sequence, which the source's next mirror may need.
            changes["InvoiceCode"] = source_credit.code
        if not changes:
            return credit
        try:
            answer = await self.call("invoice", "edit", {"Identifier": credit.id} | changes, credit.code)
        except PermanentError as exc:
            if "InvoiceCode" in changes and any("already used" in message for message in exc.errors):
                # Another credit invoice the target numbered holds it until its own sync renumbers it.
                raise TransientError(
                    f"{changes['InvoiceCode']} is still held in {self.name}", exchange=exc.exchange
                ) from exc
            raise
        return self.document(answer)

    async def _debtor(self, source: Invoice) -> str:
        """The target's debtor for the source's: the same DebtorCode, created from the invoice's copy."""
        known = await self.ids.get("debtor", source.party)
        if known:
            return known
        if not await self._debtor_exists(source.party):
            fields = {key: value for key, value in source.party_details.items() if key in DEBTOR_FIELDS}
            try:
                await self.call("debtor", "add", {"DebtorCode": source.party, **fields}, source.party)
            except PermanentError:
                # Syncs of two invoices of one new debtor race to create it; the loser finds it made.
                if not await self._debtor_exists(source.party):
                    raise
        await self.ids.put("debtor", source.party, source.party)
        return source.party

    async def _debtor_exists(self, code: str) -> bool:
        try:
            await self.call("debtor", "show", {"DebtorCode": code}, code)
        except PermanentError as exc:
            if _is_not_found(exc):
                return False
            raise
        return True


class PurchaseLedger(_ApiLedger):
    """The source's invoices as purchase invoices (controller `creditinvoice`) in a customer's target."""

    controller = "creditinvoice"
    line_controller = "creditinvoiceline"
    statuses = PURCHASE_STATUSES
    party_key = "CreditorCode"
    # HostFact's creditinvoice markaspaid sets AmountPaid to 0: a paid one's amount says nothing.
    paid_keeps_amount = False

    def __init__(self, client: ApiClient, ids: IdMap, calls: list[str], *, creditor: str) -> None:
        super().__init__(client, ids, calls)
        self.creditor = creditor

    async def _create(self, source: Invoice, marker: str) -> Applied:
        params = self._document(source, marker) | {"Status": 0 if source.is_draft else 1}
        answer = await self.call("creditinvoice", "add", params, source.code)
        return Applied(self.document(answer))

    async def _apply(self, step: Step, source: Invoice, mirror: Invoice, marker: str) -> Applied:
        ident = {"Identifier": mirror.id}
        if isinstance(step, Finalise):
            return await self._edit(mirror, {"Status": 1})
        if isinstance(step, Pay):
            params = (
                ident
                | {"AmountPaid": str(step.amount)}
                | ({"PayDate": step.pay_date} if step.pay_date else {})
            )
            answer = await self.call("creditinvoice", "partpayment", params, f"{mirror.id} {step.amount}")
            return Applied(self.document(answer))
        if isinstance(step, MarkPaid):
            await self.call("creditinvoice", "markaspaid", ident, mirror.id)
            return Applied(predict(step, source, mirror), fresh=False)
        if isinstance(step, MarkUnpaid):
            # Purchase invoices have no markasunpaid: set the status and paid amount back by hand.
            return await self._edit(mirror, {"Status": 1, "AmountPaid": "0.00"})
        if isinstance(step, Credit):
            return await self._credit(step, source, mirror, marker)
        raise TypeError(f"unknown step {step!r}")

    def _document(self, source: Invoice, marker: str) -> dict[str, Any]:
        return {
            "CreditorCode": self.creditor,
            # The supplier's number is the source's own invoice number.
            "InvoiceCode": source.code,
            "Date": source.date,
            "Term": source.term,
            "ReferenceNumber": marker,
            "InvoiceLines": [self._line_params(line) for line in source.lines],
        }

    async def settle_credit(self, credit: Invoice, marker: str, source_credit: Invoice | None) -> Invoice:
        """The purchase credit invoice is made with its marker and number: nothing to settle."""
        return credit

    async def _credit(self, step: Credit, source: Invoice, mirror: Invoice, marker: str) -> Applied:
        _, credit = await self.find(marker)
        if credit is None:
            negated = replace(source, lines=tuple(line.negated() for line in source.lines))
            if step.source_credit is not None:
                negated = replace(negated, code=step.source_credit.code, date=step.source_credit.date)
            else:
                negated = replace(negated, code=f"{source.code}-credit")
            params = self._document(negated, marker) | {"Status": 8}
            answer = await self.call("creditinvoice", "add", params, negated.code)
            credit = self.document(answer)
        if self.client.dialect == "hostfact":
            cancelled = await self._edit(mirror, {"Status": 9})
            return Applied(cancelled.mirror, credit)
        # WeFact purchase invoices have no cancelled status: the credit invoice offsets the original.
        return Applied(replace(mirror, status=Status.CANCELLED), credit, fresh=False)
