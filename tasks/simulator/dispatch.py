"""The route table: which (controller, action) pairs exist and the function that carries each one out."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tasks.simulator import invoices, purchases, relations
from tasks.simulator.envelope import Outcome
from tasks.simulator.params import Params
from tasks.simulator.store import Store

Action = Callable[[Store, Params], Outcome]

ACTIONS: Mapping[str, Mapping[str, Action]] = {
    "invoice": {
        "show": invoices.show,
        "list": invoices.list_,
        "add": invoices.add,
        "edit": invoices.edit,
        "delete": invoices.delete,
        "partpayment": invoices.partpayment,
        "markaspaid": invoices.markaspaid,
        "markasunpaid": invoices.markasunpaid,
        "credit": invoices.credit,
        "sendbyemail": invoices.sendbyemail,
        "sendreminderbyemail": invoices.sendreminderbyemail,
        "sendsummationbyemail": invoices.sendsummationbyemail,
    },
    "invoiceline": {"add": invoices.line_add, "delete": invoices.line_delete},
    "creditinvoice": {
        "show": purchases.show,
        "list": purchases.list_,
        "add": purchases.add,
        "edit": purchases.edit,
        "delete": purchases.delete,
        "partpayment": purchases.partpayment,
        "markaspaid": purchases.markaspaid,
    },
    "creditinvoiceline": {"add": purchases.line_add, "delete": purchases.line_delete},
    "debtor": {
        "show": relations.debtor_show,
        "list": relations.debtor_list,
        "add": relations.debtor_add,
        "edit": relations.debtor_edit,
    },
    "creditor": {
        "show": relations.creditor_show,
        "list": relations.creditor_list,
        "add": relations.creditor_add,
        "edit": relations.creditor_edit,
    },
}

READ_ACTIONS = frozenset({"show", "list"})
# Controllers HostFact lets through while another API write holds its lock (hostfactapi.class.php checkLogin).
LOCK_FREE_CONTROLLERS = frozenset({"product", "group", "ticket", "attachment", "debtor", "creditor"})


def is_write(action: str) -> bool:
    return action not in READ_ACTIONS
