"""Fault injection: rules that make matching API calls slow, fail, hang, lose their answer or get banned."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast, get_args

FaultKind = Literal[
    "latency",
    "http_500",
    "http_502",
    "http_503",
    "timeout",
    "html",
    "empty_body",
    "lost_answer",
    "ban_403",
    "concurrent",
]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))

# Seconds used when a rule gives none: latency delays this long; timeout hangs this long, then drops the line.
DEFAULT_SECONDS: Mapping[str, float] = {"latency": 1.0, "timeout": 30.0, "ban_403": 0.0}


@dataclass
class FaultRule:
    """One fault and the calls it hits.

    ``times``: the next N matching calls, then the rule retires. ``probability``: each matching call with this
    chance, drawn from the administration's seeded random, so a run replays. Neither: every matching call.
    ``seconds``: latency delay, timeout hang, or ban_403 ban length (0 = only this call). ``status``: the HTTP
    status of an ``html`` page (200 or 500).
    """

    kind: FaultKind
    controller: str | None = None
    action: str | None = None
    writes_only: bool = False
    times: int | None = None
    probability: float | None = None
    seconds: float | None = None
    status: int | None = None
    id: int = 0
    hits: int = field(default=0)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must lie between 0 and 1")
        if self.seconds is not None and self.seconds < 0:
            raise ValueError("seconds must not be negative")

    @property
    def delay(self) -> float:
        return self.seconds if self.seconds is not None else DEFAULT_SECONDS.get(self.kind, 0.0)

    def matches(self, controller: str, action: str, write: bool) -> bool:
        if self.controller is not None and self.controller.lower() != controller:
            return False
        if self.action is not None and self.action.lower() != action:
            return False
        return write or not self.writes_only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """A rule from JSON (the HTTP control route); unknown keys are an error, not silently ignored."""
        allowed = {"kind", "controller", "action", "writes_only", "times", "probability", "seconds", "status"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault rule keys: {sorted(unknown)}")
        if "kind" not in data:
            raise ValueError("a fault rule needs a 'kind'")
        return cls(
            kind=cast(FaultKind, str(data["kind"])),
            controller=_optional_str(data.get("controller")),
            action=_optional_str(data.get("action")),
            writes_only=bool(data.get("writes_only", False)),
            times=None if data.get("times") is None else int(data["times"]),
            probability=None if data.get("probability") is None else float(data["probability"]),
            seconds=None if data.get("seconds") is None else float(data["seconds"]),
            status=None if data.get("status") is None else int(data["status"]),
        )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


class FaultPlan:
    """The fault rules of one administration, checked in order; the first rule that fires wins."""

    def __init__(self, seed: int = 0) -> None:
        self.rules: list[FaultRule] = []
        self._seed = seed
        self._random = random.Random(seed)
        self._next_id = 0

    def add(self, rule: FaultRule) -> FaultRule:
        self._next_id += 1
        rule.id = self._next_id
        self.rules.append(rule)
        return rule

    def inject(
        self,
        kind: FaultKind,
        *,
        controller: str | None = None,
        action: str | None = None,
        writes_only: bool = False,
        times: int | None = None,
        probability: float | None = None,
        seconds: float | None = None,
        status: int | None = None,
    ) -> FaultRule:
        """Add a rule: ``admin.faults.inject("http_503", action="partpayment", times=2)``."""
        return self.add(FaultRule(kind, controller, action, writes_only, times, probability, seconds, status))

    def clear(self) -> None:
        """Drop every rule and restart the random sequence, so a cleared plan replays like a new one."""
        self.rules.clear()
        self._random = random.Random(self._seed)

    def pick(self, controller: str, action: str, write: bool) -> FaultRule | None:
        """The rule that hits this call, if any; counts the hit and retires exhausted ``times`` rules."""
        for rule in list(self.rules):
            if not rule.matches(controller, action, write):
                continue
            if rule.probability is not None and self._random.random() >= rule.probability:
                continue
            rule.hits += 1
            if rule.times is not None:
                rule.times -= 1
                if rule.times == 0:
                    self.rules.remove(rule)
            return rule
        return None
