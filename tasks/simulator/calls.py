"""The call log: one entry per API request, api_key redacted, so tests and benchmarks can count calls."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

REDACTED = "REDACTED"
# "pending" until answered; "empty" is HostFact's bodiless answer; "fault" an injected HTTP-level fault.
CallOutcome = Literal["pending", "success", "error", "empty", "fault", "banned"]


@dataclass
class CallRecord:
    seq: int
    controller: str
    action: str
    params: dict[str, Any]
    remote: str
    started: float = field(default_factory=time.time)
    outcome: CallOutcome = "pending"
    # The injected fault that shaped this call, if any ("latency", "lost_answer", ...).
    fault: str | None = None
    # None when the connection was dropped without an answer (timeout, lost_answer).
    http_status: int | None = None
    errors: list[str] = field(default_factory=list)
    # True when the call changed the administration's state (a write that succeeded).
    applied: bool = False
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "controller": self.controller,
            "action": self.action,
            "params": self.params,
            "remote": self.remote,
            "started": self.started,
            "outcome": self.outcome,
            "fault": self.fault,
            "http_status": self.http_status,
            "errors": self.errors,
            "applied": self.applied,
            "duration": round(self.duration, 6),
        }


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the params with every api_key (and anything named like a password) replaced."""

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: REDACTED if _secret(str(key)) else walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    redacted: dict[str, Any] = walk(params)
    return redacted


def _secret(key: str) -> bool:
    lowered = key.lower()
    return lowered == "api_key" or "password" in lowered
