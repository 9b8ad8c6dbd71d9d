"""HostFact's invoice hooks as factsync receives them: one pydantic model per action.

HostFact sends ids as ints or strings, amounts as numbers or strings and flags as bools or 0/1; the models
accept all of them and normalise (ids to int, amounts to Decimal, flags to bool).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


def _to_id(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("an id is a positive whole number, not a boolean")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _to_amount(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("an amount is a number, not a boolean")
    if isinstance(value, int | float | str):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not an amount") from None
        if not amount.is_finite():
            raise ValueError(f"{value!r} is not an amount")
        try:
            return amount.quantize(Decimal("0.01"))
        except InvalidOperation:
            # Too many digits to hold in cents (1e228): no invoice amount, and no reason to answer 500.
            raise ValueError(f"{value!r} is not an amount") from None
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _to_flag(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{value!r} is not true or false")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return value


def _to_count(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


Id = Annotated[int, BeforeValidator(_to_id), Field(gt=0, strict=True)]
Amount = Annotated[Decimal, BeforeValidator(_to_amount)]
Flag = Annotated[bool, BeforeValidator(_to_flag), Field(strict=True)]
Count = Annotated[int, BeforeValidator(_to_count), Field(ge=0, strict=True)]
Code = Annotated[str, Field(min_length=1, max_length=255)]


class InvoiceRef(BaseModel):
    """What a sync needs of any invoice hook: the invoice's id. The rest of a hook is information."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Id

    @property
    def document_id(self) -> int:
        """The source invoice whose state this hook says changed (the original, for a credit)."""
        return self.id


class CreditRef(InvoiceRef):
    """What a sync needs of invoice_is_credited: the original's id and the credit invoice's."""

    CreditInvoiceID: Id


class CreditLink(InvoiceRef):
    """What factsync's forwarder adds to invoice_is_created of a credit invoice, read in HostFact's own
    process (the API shows neither): the invoice it credits, and that invoice's Status when the credit was
    made."""

    CorrespondingInvoice: Id | None = None
    CorrespondingInvoiceStatus: Annotated[int, Field(ge=0, le=9, strict=True)] | None = None

    @property
    def document_id(self) -> int:
        # A credit invoice is its original's story: the original's sync mirrors it.
        return self.CorrespondingInvoice or self.id


class InvoiceHook(InvoiceRef):
    """The keys every invoice hook carries: the invoice's id and number and its debtor's id."""

    Debtor: Id
    InvoiceCode: Code


class InvoiceSentHook(InvoiceHook):
    """invoice_is_sent and the reminder and summation hooks: the counters are the values after the send."""

    viaMail: Flag = False
    viaPost: Flag = False
    Sent: Count
    Reminders: Count
    Summations: Count


class InvoicePartlyPaidHook(InvoiceHook):
    AmountPaidNow: Amount
    AmountPaidTotal: Amount
    # Negative after an overpayment: HostFact leaves such an invoice at Status 3.
    AmountOpen: Amount


class InvoiceCreatedHook(InvoiceHook, CreditLink):
    """invoice_is_created; for a credit invoice, factsync's forwarder adds CorrespondingInvoice(Status)."""


class InvoiceCreditedHook(InvoiceHook, CreditRef):
    """``id``/``InvoiceCode`` are the original invoice; ``CreditInvoice*`` the new Status 8 invoice."""

    CreditInvoiceCode: Code


HOOKS: dict[str, type[InvoiceHook]] = {
    "invoice_is_created": InvoiceCreatedHook,
    "invoice_is_edited": InvoiceHook,
    "invoice_is_sent": InvoiceSentHook,
    "invoice_reminder_is_sent": InvoiceSentHook,
    "invoice_summation_is_sent": InvoiceSentHook,
    "invoice_is_partly_paid": InvoicePartlyPaidHook,
    "invoice_is_paid": InvoiceHook,
    "invoice_is_unpaid": InvoiceHook,
    "invoice_is_credited": InvoiceCreditedHook,
}


def parse_hook(action: str, data: Any) -> InvoiceHook | None:
    """The validated hook, or None for an action factsync does not act on.

    Raises pydantic.ValidationError naming the bad fields.
    """
    model = HOOKS.get(action)
    if model is None:
        return None
    return model.model_validate(data)


@dataclass(frozen=True)
class HookReading:
    """What an authentic hook gives the sync: the invoice it names (with the fields that did not parse), or
    why it names none. An authentic hook is never refused for a field the sync does not need."""

    hook: InvoiceRef | None
    # "data.Sent: Input should be ...": fields that did not parse; the sync reads the invoice, not these.
    problems: tuple[str, ...] = ()
    # Why no sync can come of it (no usable invoice id): the event goes to the failed store for a person.
    unusable: str | None = None

    @property
    def payload(self) -> dict[str, Any]:
        return self.hook.model_dump(mode="json") if self.hook is not None else {}


def read_hook(action: str, data: dict[str, Any]) -> HookReading | None:
    """The hook read as leniently as the sync allows; None for an action factsync does not act on."""
    model = HOOKS.get(action)
    if model is None:
        return None
    try:
        return HookReading(model.model_validate(data))
    except ValidationError as exc:
        problems = tuple(_describe(error) for error in exc.errors())
    # What the sync needs of this hook. A full credit's hook without its credit invoice goes to a person;
    # a credit link that does not parse is noted, and the invoice is still synced.
    cores: list[type[InvoiceRef]] = [InvoiceRef]
    if issubclass(model, CreditRef):
        cores = [CreditRef]
    elif issubclass(model, CreditLink):
        cores = [CreditLink, InvoiceRef]
    unusable = ""
    for core in cores:
        try:
            return HookReading(core.model_validate(data), problems=problems)
        except ValidationError as exc:
            unusable = "; ".join(_describe(error) for error in exc.errors())
    return HookReading(None, problems, unusable=unusable)


def credit_invoice_of(hook: InvoiceRef) -> int | None:
    """The credit invoice an invoice_is_credited hook names."""
    return hook.CreditInvoiceID if isinstance(hook, CreditRef) else None


def _describe(error: Any) -> str:
    field = "data." + ".".join(str(part) for part in error["loc"]) if error["loc"] else "data"
    return f"{field}: {error['msg']}"
