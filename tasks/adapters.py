"""Ledger adapters: a route's target documents as HostFact/WeFact API calls, and API rows as `Invoice`s.

`SalesLedger` keeps mirrors of sales invoices (controller `invoice`), `PurchaseLedger` purchase invoices
(controller `creditinvoice`). This is the edge where the API's field names live.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any, Final

from tasks.client import ApiClient, Rows
from tasks.errors import ApiError, PermanentError, TransientError
from tasks.invoice import (
    MARKER_PREFIX,
    ZERO,
    Invoice,
    Line,
    Status,
    cents,
    money,
    number,
    percentage,
    quantity,
)
from tasks.ledger import Applied, IdMap, Ledger, Listed
from tasks.model import Route
from tasks.plan import (
    AddLines,
    CreateMirror,
    Credit,
    EditHeader,
    Finalise,
    MarkPaid,
    MarkUnpaid,
    MirrorCreditNote,
    Pay,
    RemoveLines,
    Step,
    predict,
)
from tasks.protocol import Dialect

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
# The id-map kind of a debtor code a bulk run's listing of the target's debtors did not find.
DEBTOR_ABSENT: Final = "debtor_absent"
# List pages a bulk listing reads at once, once the first page told how many there are.
LIST_CONCURRENCY: Final = 4
# WeFact's payment methods; a HostFact method outside these is booked as a bank transfer.
WEFACT_PAYMENT_METHODS: Final = frozenset({"wire", "auth", "ideal", "paypal", "cash", "other"})
# What keeps a mirror inert (invariant 9). Authorisation "no": HostFact puts a Status 2/3 invoice whose
# Authorisation is "yes" (copied from the debtor's InvoiceAuthorisation when not given) in the next SEPA
# direct-debit batch (invoice_api_controller::add_api_action, invoice::addInvoiceToSDDBatch): the customer
# would be collected twice. IgnoreDiscount "yes": invoice::add/edit skip discount::check, which may raise the
# discount or insert discount lines. InvoiceMethod 1 (post): the reminder cron mails reminders and summations
# only for InvoiceMethod 0, 3 and 4 (cronjob.php); `add` itself never mails, only sendbyemail does.
# IgnoreDiscount as 1: HostFact takes "yes" or 1 (invoice_api_controller::add_api_action, invoice::validate),
# WeFact's clients that tested the live API send 0/1.
INERT_INVOICE: Final = {"Authorisation": "no", "IgnoreDiscount": "1", "InvoiceMethod": 1}
# A debtor factsync creates in a HostFact target: VAT exactly as the mirror's lines say (Taxable "yes":
# config.php::btwcheck returns the line's own rate instead of the target's tax rules, which the source already
# applied), no direct debit, and none of debtor add's defaults that reach the customer: a client-area login
# (ActiveLogin) and the mailing list. WeFact documents none of these fields on debtor add; its direct debit
# (DirectDebitApplyTo) is off unless asked.
INERT_DEBTOR: Final[Mapping[Dialect, Mapping[str, str]]] = {
    "hostfact": {"Taxable": "yes", "InvoiceAuthorisation": "no", "ActiveLogin": "no", "Mailing": "no"},
    "wefact": {},
}
# HostFact's period units (Periodic), as a mirror line's description names them.
PERIOD_UNITS: Final = {
    "d": ("dag", "dagen"),
    "w": ("week", "weken"),
    "m": ("maand", "maanden"),
    "k": ("kwartaal", "kwartalen"),
    "h": ("halfjaar", "halfjaren"),
    "j": ("jaar", "jaar"),
    "t": ("twee jaar", "keer twee jaar"),
}


def without_periods(line: Line) -> Line:
    """A subscription line as a plain line of the same amount: the price of all its periods, and the period in
    its description. A target given PeriodicType "period" makes a subscription of it (invoiceelement::add
    creates a HostFact_PeriodicElements row; WeFact: "periodiek factureren") that would bill the customer
    again: a mirror line is never one."""
    if not line.periodic:
        return line
    singular, plural = PERIOD_UNITS.get(line.period_unit, (line.period_unit, line.period_unit))
    unit = singular if line.periods == 1 else plural
    start = f" vanaf {line.start_period}" if line.start_period else ""
    return replace(
        line,
        description=f"{line.description} ({line.periods} {unit}{start})",
        price_excl=number(line.price_excl * line.periods),
        periods=1,
        period_unit="",
        start_period="",
    )


def parse_line(line: Mapping[str, Any]) -> Line:
    """A line of a sales or purchase invoice (purchase lines have no discount or periods)."""
    # A line is a subscription line when it has a period unit; HostFact stores Periods 1 on any other
    # (invoice_api_controller::_updateInvoiceLines), so only then do its Periods count.
    unit = str(line.get("Periodic") or "")
    return Line(
        description=str(line.get("Description", "")),
        quantity=quantity(line.get("Number", "1")),
        price_excl=number(line.get("PriceExcl", "0")),
        tax_percentage=percentage(line.get("TaxPercentage", "0")),
        discount_percentage=percentage(line.get("DiscountPercentage", "0")),
        periods=int(number(line.get("Periods") or 1)) if unit else 1,
        period_unit=unit,
        # WeFact prints both StartPeriod and StartDate (its input for a period's start).
        start_period=str(line.get("StartPeriod") or line.get("StartDate") or "")[:10] if unit else "",
        identifier=str(line.get("Identifier", "")),
    )


def parse_invoice(row: Mapping[str, Any], statuses: Mapping[int, Status], party_key: str) -> Invoice:
    lines = tuple(parse_line(line) for line in row.get("InvoiceLines") or [])
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
        discount=percentage(row.get("Discount") or 0),
        vat_calc_method="incl" if row.get("VatCalcMethod") == "incl" else "excl",
    )


def parse_sales_invoice(row: Mapping[str, Any]) -> Invoice:
    """A HostFact/WeFact sales invoice, with the debtor data it carries."""
    invoice = parse_invoice(row, SALES_STATUSES, "DebtorCode")
    details = {key: str(row[key]) for key in DEBTOR_FIELDS if row.get(key) not in (None, "")}
    return replace(invoice, party_details=details)


# The row keys that carry `drift.compare`'s header fields.
_ROW_FIELDS: Final = (("number", "InvoiceCode"), ("amount", "AmountIncl"), ("date", "Date"), ("term", "Term"))
# Raw statuses at which an open amount tells what was paid (sales: sent, partly paid; purchase: open, partly
# paid). HostFact's invoice list row gives AmountOpen 0 at every other status, credit invoices and paid ones
# included (invoice_api_controller::list_api_action), so a paid invoice's paid amount is not in its row.
SALES_OPEN_STATUSES: Final = frozenset({2, 3})
PURCHASE_OPEN_STATUSES: Final = frozenset({1, 2})


def listed(row: Mapping[str, Any], invoice: Invoice, open_statuses: frozenset[int]) -> Listed:
    """What a list row says of ``invoice`` (parsed from it): the paid amount where the row tells it.

    AmountPaid where a row has it (WeFact's rows); HostFact's purchase rows have PartPayment, AmountIncl −
    AmountPaid at every status (creditinvoice_api_controller::list_api_action); its sales rows AmountOpen,
    which tells only at ``open_statuses``; WeFact's AmountOutstanding likewise."""
    fields = {name for name, key in _ROW_FIELDS if key in row}
    paid: Decimal | None = None
    try:
        status = int(row.get("Status", -1))
        if "AmountPaid" in row:
            paid = money(row["AmountPaid"])
        elif "PartPayment" in row and "AmountIncl" in row:
            paid = money(row["AmountIncl"]) - money(row["PartPayment"])
        elif status in open_statuses and "AmountIncl" in row:
            left = row.get("AmountOpen", row.get("AmountOutstanding"))
            paid = None if left is None else money(row["AmountIncl"]) - money(left)
    except _MALFORMED:
        paid = None
    if paid is not None:
        fields.add("paid")
        invoice = replace(invoice, amount_paid=paid)
    return Listed(invoice, frozenset(fields))


def listed_sales(row: Mapping[str, Any]) -> Listed:
    """A sales invoice's list row (the source's, or a sales mirror's)."""
    return listed(row, parse_sales_invoice(row), SALES_OPEN_STATUSES)


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


def _exact(rows: object, key: str, value: str) -> list[Mapping[str, Any]]:
    """The rows of a list answer whose ``key`` is exactly ``value``: the API's search is a substring match
    (LIKE %x%, api_controller::getFilterValues), so "F1" also finds "F10"."""
    if not isinstance(rows, list):
        return []
    return [row for row in rows if isinstance(row, Mapping) and str(row.get(key, "")) == value]


class _ApiLedger:
    """What both adapters share: reading by id or marker, and a journal of the calls made.

    Nothing here decides on an error's text: HostFact and WeFact word them in the administration's language.
    Whether a document is gone or a number taken is asked of the API with a list search.
    """

    controller: str
    line_controller: str
    # The number `add` refuses when another document holds it; None when the target never refuses one.
    number_key: str | None
    statuses: Mapping[int, Status]
    open_statuses: frozenset[int]
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

    @property
    def marker_field(self) -> str:
        """Where a mirror carries its marker (invariant 6)."""
        return "ReferenceNumber"

    def parse(self, row: Mapping[str, Any]) -> Invoice:
        invoice = parse_invoice(row, self.statuses, self.party_key)
        if self.marker_field != "ReferenceNumber":
            invoice = replace(invoice, reference=str(row.get(self.marker_field) or ""))
        return invoice

    def guarded(self, row: object) -> Invoice:
        return parse_answer(self.parse, row, what=f"a {self.controller}", exchange=self.client.last_exchange)

    def document(self, answer: Mapping[str, Any]) -> Invoice:
        """The document an answer carries under the controller's key."""
        return self.guarded(answer.get(self.controller))

    def represent(self, source: Invoice) -> Invoice:
        """The source as this ledger's documents can hold it: what the mirror must equal."""
        return source

    async def read(self, identifier: str) -> Invoice:
        answer = await self.call(self.controller, "show", {"Identifier": identifier}, identifier)
        return self.document(answer)

    async def locate(self, known: str | None, marker: str) -> tuple[Invoice | None, Invoice | None]:
        """The mirror by its remembered id when that still carries ``marker``, else by the marker; and the
        credit invoice made from it, when the marker search found one."""
        if known:
            try:
                mirror: Invoice | None = await self.read(known)
            except PermanentError:
                # Gone, or never ours: the marker search tells which without reading the message, and
                # raises in turn when the API refuses every call (a wrong key, a closed API).
                mirror = None
            if mirror is not None and mirror.reference == marker:
                return mirror, None
        return await self.find(marker)

    async def find(self, marker: str) -> tuple[Invoice | None, Invoice | None]:
        answer = await self.call(
            self.controller, "list", {"searchat": self.marker_field, "searchfor": marker}, f"marker {marker}"
        )
        # List rows leave ReferenceNumber out (invoice_api_controller::list_api_action); the bracketed
        # marker makes every hit an exact one.
        rows = [
            row
            for row in answer.get(self.controller + "s") or []
            if row.get(self.marker_field, marker) == marker
        ]
        found = [self.guarded(row) for row in rows]
        credit = next((doc for doc in found if doc.status is Status.CREDIT), None)
        listed = next((doc for doc in found if doc.status is not Status.CREDIT), None)
        # List rows carry no lines: read the mirror itself.
        mirror = await self.read(listed.id) if listed else None
        return mirror, credit

    async def listing(self, prefix: str) -> Rows:
        """The list rows of every document whose marker contains ``prefix`` (credit invoices included): one
        paged search (LIKE %prefix%, api_controller::getFilterValues), a call per 1 000 documents."""
        return await self.client.list(
            self.controller, searchat=self.marker_field, searchfor=prefix, concurrency=LIST_CONCURRENCY
        )

    def listed(self, row: Mapping[str, Any]) -> Listed:
        """A row of `listing`, with what it tells; its marker only where the row carries the marker field."""
        return listed(row, self.parse(row), self.open_statuses)

    async def marked(self, prefix: str) -> list[tuple[str, str]]:
        """(marker, document id) of every document whose marker starts with ``prefix``, credit invoices
        (which carry their original's marker) left out."""
        rows = await self.client.list(self.controller, searchat=self.marker_field, searchfor=prefix)
        found: list[tuple[str, str]] = []
        for row in rows:
            document = self.guarded(row)
            if document.status is Status.CREDIT:
                continue
            if self.marker_field not in row:
                # List rows leave ReferenceNumber out; the document itself has it.
                document = await self.read(document.id)
            found.append((document.reference, document.id))
        return found

    async def holder(self, number: str) -> Invoice | None:
        """The document that holds ``number`` in the target, if any (read whole, for its marker)."""
        key = self.number_key or "InvoiceCode"
        answer = await self.call(
            self.controller, "list", {"searchat": key, "searchfor": number}, f"number {number}"
        )
        rows = _exact(answer.get(self.controller + "s"), key, number)
        return await self.read(str(rows[0]["Identifier"])) if rows else None

    def _line_params(self, line: Line) -> dict[str, Any]:
        # The fields a purchase line has (creditinvoice_api_controller: Identifier, Number, Description,
        # PriceExcl, TaxPercentage); the sales ledger adds its own.
        return {
            "Description": line.description,
            "Number": str(line.quantity),
            "PriceExcl": str(line.price_excl),
            "TaxPercentage": str(line.tax_percentage),
        }

    def _header(self, source: Invoice) -> dict[str, Any]:
        return {"Date": source.date, "Term": source.term}

    async def apply(self, step: Step, source: Invoice, mirror: Invoice | None, marker: str) -> Applied:
        """The steps both ledgers take alike are here; the rest is each ledger's own (`_apply`)."""
        if isinstance(step, CreateMirror):
            return await self._create(source, marker)
        assert mirror is not None, f"{step} needs a mirror"
        if isinstance(step, MirrorCreditNote):
            # A credit invoice of its own (Status 8, the source's number, date and negated lines): neither API
            # takes the link to the original (HostFact's CorrespondingInvoice is no API parameter). Its lines
            # name the original where the source's do (HostFact's CREDIT_TEXT line).
            made = await self._create(step.note.invoice, marker, status=8)
            return Applied(mirror, note=made.mirror)
        if isinstance(step, EditHeader):
            return await self._edit(mirror, self._header(source))
        if isinstance(step, AddLines):
            return await self._with_lines(mirror, "add", [self._line_params(line) for line in step.lines])
        if isinstance(step, RemoveLines):
            return await self._with_lines(
                mirror, "delete", [{"Identifier": line.identifier} for line in step.lines]
            )
        return await self._apply(step, source, mirror, marker)

    async def _create(self, source: Invoice, marker: str, *, status: int | None = None) -> Applied:
        """Make ``source`` in the target with ``marker``: as a mirror, or with ``status`` 8 a credit note."""
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

    async def _add(
        self, params: dict[str, Any], source: Invoice, marker: str, *, again: bool = False
    ) -> Applied:
        """`add` the mirror; when the target refuses, find out whether its number is taken, and by whom."""
        number = params.get(self.number_key) if self.number_key else None
        try:
            answer = await self.call(self.controller, "add", params, source.code)
        except PermanentError as refused:
            holder = await self.holder(number) if number else None
            if holder is None and number and not again:
                # Nobody holds the number now: a credit invoice the target numbered itself may have held it
                # and been given its source's number by its own sync meanwhile. Once more; a second refusal
                # stands.
                return await self._add(params, source, marker, again=True)
            if holder is None:
                raise
            if holder.reference == marker:
                # HostFact checks a line's VAT rate after it committed the invoice
                # (invoice_api_controller::_check_taxpercentage): the mirror exists, with what it took.
                raise PermanentError(
                    f"{self.name} made {holder.code} (id {holder.id}) but refused part of it: "
                    f"{'; '.join(refused.errors)}",
                    exchange=refused.exchange,
                ) from refused
            raise self._number_taken(holder, refused) from refused
        return Applied(self.document(answer))

    def _number_taken(self, holder: Invoice, refused: PermanentError) -> ApiError:
        if _made_by_factsync(holder):
            # A credit invoice the target numbered itself, until its own sync renumbers it.
            return TransientError(
                f"{holder.code} is held by a credit invoice factsync made; it gets its source number shortly",
                exchange=refused.exchange,
            )
        return PermanentError(
            f"number {holder.code} is already used in {self.name} by a document factsync did not make "
            f"(id {holder.id}); the target refused: {'; '.join(refused.errors)}",
            exchange=refused.exchange,
        )


class SalesLedger(_ApiLedger):
    """Mirrors of sales invoices (controller `invoice`) in a WeFact or HostFact target."""

    def parse(self, row: Mapping[str, Any]) -> Invoice:
        return parse_sales_invoice(row)

    controller = "invoice"
    line_controller = "invoiceline"
    number_key = "InvoiceCode"
    statuses = SALES_STATUSES
    open_statuses = SALES_OPEN_STATUSES
    party_key = "DebtorCode"
    paid_keeps_amount = True

    def represent(self, source: Invoice) -> Invoice:
        return replace(source, lines=tuple(without_periods(line) for line in source.lines))

    def _line_params(self, line: Line) -> dict[str, Any]:
        params = super()._line_params(line)
        if line.discount_percentage:
            params["DiscountPercentage"] = str(line.discount_percentage)
        if self.client.dialect == "wefact":
            # WeFact takes a line's VAT by code; its default codes are V<percentage>.
            params["TaxCode"] = f"V{line.tax_percentage}"
        return params

    def _header(self, source: Invoice) -> dict[str, Any]:
        return super()._header(source) | {
            "Discount": str(source.discount),
            "VatCalcMethod": source.vat_calc_method,
        }

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
                params["PaymentMethod"] = "other" if step.credit is not None else method
            answer = await self.call("invoice", "partpayment", params, f"{mirror.id} {step.amount}")
            if step.credit is not None:
                return await self._note_credit(answer, step)
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

    async def _note_credit(self, answer: Mapping[str, Any], step: Pay) -> Applied:
        """Say in the mirror's internal note (Comment) that a part payment is a credit invoice, not money: the
        one place HostFact shows it (its partpayment ignores PaymentMethod). A person's note stays."""
        assert step.credit is not None
        row = answer.get("invoice")
        comment = str(row.get("Comment") or "") if isinstance(row, Mapping) else ""
        line = credit_payment_note(step.credit.invoice.code, step.amount)
        if line in comment:
            return Applied(self.document(answer))
        mirror = self.document(answer)
        text = f"{comment}\n{line}" if comment else line
        return await self._edit(mirror, {"Comment": text})

    async def _create(self, source: Invoice, marker: str, *, status: int | None = None) -> Applied:
        debtor = await self._debtor(source)
        params = {
            "DebtorCode": debtor,
            "InvoiceCode": source.code,
            **self._header(source),
            # A mirror is never sent to the debtor by the target: it starts as sent (2), or as a draft.
            "Status": status if status is not None else 0 if source.is_draft else 2,
            "ReferenceNumber": marker,
            **INERT_INVOICE,
            "InvoiceLines": [self._line_params(line) for line in source.lines],
        }
        return await self._add(params, source, marker)

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
        params = {"Identifier": credit.id} | changes
        try:
            answer = await self.call("invoice", "edit", params, credit.code)
        except PermanentError as exc:
            if "InvoiceCode" not in changes:
                raise
            holder = await self.holder(changes["InvoiceCode"])
            if holder is None:
                # Held when the target refused, free now: its holder got its own source number in between
                # (in another document's sync). The refused edit changed nothing: edit once more.
                try:
                    answer = await self.call("invoice", "edit", params, credit.code)
                except PermanentError:
                    raise exc from None
                return self.document(answer)
            if holder.id != credit.id:
                # Another credit invoice the target numbered holds it until its own sync renumbers it. It
                # may want the number this one holds (two credits mirrored in the other order than the
                # source made them): this one steps aside first, so neither waits for the other forever.
                wanted = changes["InvoiceCode"]
                parked = f"{wanted}-factsync-{credit.id}"
                if _made_by_factsync(holder) and credit.code != parked:
                    await self.call("invoice", "edit", params | {"InvoiceCode": parked}, credit.code)
                raise TransientError(
                    f"{wanted} is still held in {self.name} by {holder.code} (id {holder.id})",
                    exchange=exc.exchange,
                ) from exc
            raise
        return self.document(answer)

    async def _debtor(self, source: Invoice) -> str:
        """The target's debtor for the source's: the same DebtorCode, created from the invoice's copy."""
        known = await self.ids.get("debtor", source.party)
        if known:
            return known
        # A bulk run's listing of the target's debtors found none with this code: add it without a search
        # (a refused add searches, as ever, so a hint gone stale costs a call, never a wrong debtor).
        listed_absent = await self.ids.get(DEBTOR_ABSENT, source.party) is not None
        if listed_absent or not await self._debtor_exists(source.party):
            fields = {key: value for key, value in source.party_details.items() if key in DEBTOR_FIELDS}
            params = {"DebtorCode": source.party, **fields, **INERT_DEBTOR[self.client.dialect]}
            try:
                await self.call("debtor", "add", params, source.party)
            except PermanentError:
                # Syncs of two invoices of one new debtor race to create it; the loser finds it made.
                if not await self._debtor_exists(source.party):
                    raise
        await self.ids.put("debtor", source.party, source.party)
        if listed_absent:
            await self.ids.forget(DEBTOR_ABSENT, source.party)
        return source.party

    async def _debtor_exists(self, code: str) -> bool:
        # By list and an exact match: `debtor show` of a missing code answers only a message, worded
        # "Unknown client number" or "Invalid identifier for debtor" by path and in the target's language
        # (api_controller::_get_debtor_id).
        answer = await self.call(
            "debtor", "list", {"searchat": "DebtorCode", "searchfor": code}, f"debtor {code}"
        )
        return bool(_exact(answer.get("debtors"), "DebtorCode", code))


class PurchaseLedger(_ApiLedger):
    """The source's invoices as purchase invoices (controller `creditinvoice`) in a customer's target."""

    controller = "creditinvoice"
    line_controller = "creditinvoiceline"
    # Our own number in the target is CreditInvoiceCode, which the target hands out; the supplier's number
    # (the source's InvoiceCode) is never refused (creditinvoice::is_freeExt only warns).
    number_key = None
    statuses = PURCHASE_STATUSES
    open_statuses = PURCHASE_OPEN_STATUSES
    party_key = "CreditorCode"
    # HostFact's creditinvoice markaspaid sets AmountPaid to 0: a paid one's amount says nothing.
    paid_keeps_amount = False

    def __init__(self, client: ApiClient, ids: IdMap, calls: list[str], *, creditor: str) -> None:
        super().__init__(client, ids, calls)
        self.creditor = creditor

    @property
    def marker_field(self) -> str:
        # WeFact's purchase invoices have no ReferenceNumber; "Comment" (Interne notitie) is a documented
        # field of creditinvoice add, show and list rows (wefact.nl/api/inkoopfacturen/*).
        return "Comment" if self.client.dialect == "wefact" else "ReferenceNumber"

    def represent(self, source: Invoice) -> Invoice:
        """Purchase lines hold a number, a description, a price and a VAT rate, nothing more
        (creditinvoice_api_controller), and WeFact's not even a number: periods fold into the price (and
        WeFact's quantities too), and discounts (the line's and the invoice's) become lines of their own with
        the amounts HostFact computes (functions.php::getLineAmount, calculateFinancialTotals), so the totals
        stay the source's."""
        lines: list[Line] = []
        for line in source.lines:
            plain = without_periods(line)
            lines.append(replace(plain, discount_percentage=Decimal(0), identifier=""))
            if line.discount_percentage:
                gross = line.price_excl * line.periods * line.quantity
                off = -cents(gross * line.discount_percentage / 100)
                what = f"Korting {line.discount_percentage}% op {plain.description}"
                lines.append(Line(what, Decimal(1), number(off), line.tax_percentage))
        if source.discount:
            per_rate: dict[Decimal, Decimal] = {}
            for line in source.lines:
                per_rate[line.tax_percentage] = per_rate.get(line.tax_percentage, ZERO) + line.amount_excl()
            for rate, subtotal in per_rate.items():
                off = cents(subtotal - subtotal * source.discount / 100) - subtotal
                if off:
                    lines.append(Line(f"Korting {source.discount}%", Decimal(1), number(off), rate))
        if self.client.dialect == "wefact":
            lines = [_one_of(line) for line in lines]
        return replace(source, lines=tuple(lines), discount=ZERO, vat_calc_method="excl")

    def _line_params(self, line: Line) -> dict[str, Any]:
        if self.client.dialect == "wefact":
            # WeFact's purchase lines take Description, PriceExcl and a purchase VAT code, no Number and no
            # TaxPercentage (wefact.nl/api/inkoopfacturen/toevoegen); its default codes are I<percentage>.
            return {
                "Description": line.description,
                "PriceExcl": str(line.price_excl),
                "TaxCode": f"I{line.tax_percentage}",
            }
        return super()._line_params(line)

    async def _with_lines(self, mirror: Invoice, action: str, lines: list[dict[str, Any]]) -> Applied:
        if self.client.dialect == "wefact":
            # Without it WeFact keeps AmountIncl as it was (creditinvoiceline add/delete: "standaard 'no'").
            answer = await self.call(
                self.line_controller,
                action,
                {"Identifier": mirror.id, "InvoiceLines": lines, "RecalculateInclTotalAmount": "yes"},
                f"{len(lines)} line(s)",
            )
            return Applied(self.document(answer))
        await super()._with_lines(mirror, action, lines)
        # HostFact's creditinvoiceline add/delete recompute AmountExcl but leave AmountIncl as it was
        # (creditinvoice::edit); an edit of the purchase invoice recomputes both.
        return await self._edit(mirror, {})

    async def _create(self, source: Invoice, marker: str, *, status: int | None = None) -> Applied:
        if status is None:
            status = 0 if source.is_draft else 1
        return await self._add(self._document(source, marker) | {"Status": status}, source, marker)

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
            self.marker_field: marker,
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


def _made_by_factsync(document: Invoice) -> bool:
    """A credit invoice factsync had the target make (`invoice credit`), numbered from the target's own
    sequence until its sync gives it the source credit's number."""
    return document.status is Status.CREDIT and document.reference.startswith(MARKER_PREFIX)


def credit_payment_note(code: str, amount: Decimal) -> str:
    """The line a mirror's internal note gets for a partial credit booked as a part payment (in Dutch, as the
    administration reads it)."""
    return f"factsync: deelbetaling {amount} is creditfactuur {code}, geen ontvangen betaling"


def _one_of(line: Line) -> Line:
    """A line as one unit of its whole amount, its quantity in the description: for WeFact purchase lines."""
    if line.quantity == 1:
        return line
    return replace(
        line,
        description=f"{line.quantity} × {line.description}",
        quantity=Decimal(1),
        price_excl=line.amount_excl(),
    )


def ledger_for(
    route: Route, client: ApiClient, ids: IdMap, calls: list[str], party: str | None = None
) -> Ledger:
    """The adapter for ``route``'s target; ``party`` is the source invoice's debtor (a purchase route
    books it for the creditor mapped to that debtor; without one, the ledger only reads)."""
    if route.ledger == "purchase":
        creditor = route.creditors[party] if party is not None else ""
        return PurchaseLedger(client, ids, calls, creditor=creditor)
    return SalesLedger(client, ids, calls)
