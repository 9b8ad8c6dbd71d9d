"""The API v2 answer: what an action produced, the JSON envelope around it, and the failures actions raise."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

Record = dict[str, Any]
PendingHook = tuple[str, dict[str, Any]]

# HostFact answers a login failure before it routed the call, so the envelope names no controller or action.
UNROUTED = "invalid"
CONCURRENT_CALLS = "API has concurrent calls, but the queue was not able to fix them in 5 seconds."


class ApiFailure(Exception):
    """The call failed: the API answers ``status: error`` with these messages and changes nothing."""

    def __init__(self, *errors: str) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


class EmptyAnswer(Exception):
    """HostFact ends some failed calls without printing anything: HTTP 200 with an empty body."""


@dataclass
class Outcome:
    """What one action did: the messages and payload to answer with, and the hooks its write fires."""

    key: str | None = None
    payload: Any = None
    success: list[str] = field(default_factory=list)
    # None: no "warning" key. WeFact prints "warning": [] on some actions even when empty.
    warning: list[str] | None = None
    # List metadata in HostFact's order: totalresults, currentresults, offset, filters.
    meta: dict[str, Any] = field(default_factory=dict)
    hooks: list[PendingHook] = field(default_factory=list)
    # The record written (add, edit, ...): seeding helpers return it, the call log counts applied writes.
    record: Record | None = None
    changed: bool = False
    # An invoice created in HostFact's still open transaction: invisible to other calls while its hooks run.
    uncommitted: int | None = None


def php_date() -> str:
    """PHP's ``date('c')``: local time with its UTC offset."""
    return datetime.now().astimezone().replace(microsecond=0).isoformat()


def success_body(controller: str, action: str, outcome: Outcome) -> dict[str, Any]:
    body: dict[str, Any] = {
        "controller": controller,
        "action": action,
        "status": "success",
        "date": php_date(),
    }
    if outcome.warning is not None:
        body["warning"] = outcome.warning
    if outcome.success:
        body["success"] = outcome.success
    body.update(outcome.meta)
    # An empty payload (an empty list above all) gets no key at all, as in PHP's ``if(!empty($data))``.
    if outcome.key is not None and outcome.payload:
        body[outcome.key] = outcome.payload
    return body


def error_body(controller: str, action: str, errors: list[str]) -> dict[str, Any]:
    return {
        "controller": controller,
        "action": action,
        "status": "error",
        "date": php_date(),
        "errors": errors,
    }


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> str:
    """Compact JSON like PHP's json_encode; Decimals as strings (the API never prints a float)."""
    return json.dumps(value, separators=(",", ":"), default=_json_default)
