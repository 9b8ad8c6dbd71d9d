"""WeFact's per-IP rate limit and firewall: API-RateLimit-* headers, and an HTTP 403 ban on a breach."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

MINUTE = 60
HOUR = 3600
# Live WeFact limits per IP (its docs say 200/min and 3600/h).
WEFACT_PER_MINUTE = 500
WEFACT_PER_HOUR = 5000


@dataclass
class Verdict:
    allowed: bool
    headers: dict[str, str]


@dataclass
class _Usage:
    minute_start: int = 0
    minute_count: int = 0
    hour_start: int = 0
    hour_count: int = 0


@dataclass
class Firewall:
    """Counts calls per IP in fixed clock-aligned windows; a call over either limit bans the IP.

    A limit of None means unlimited. ``headers`` is False for HostFact, which has no rate limit and no
    headers; its firewall only serves the ``ban_403`` fault.
    """

    per_minute: int | None
    per_hour: int | None
    ban_seconds: float
    headers: bool
    clock: Callable[[], float] = time.time
    _usage: dict[str, _Usage] = field(default_factory=dict)
    _banned_until: dict[str, float] = field(default_factory=dict)

    def reset(self) -> None:
        self._usage.clear()
        self._banned_until.clear()

    def ban(self, ip: str, seconds: float) -> None:
        self._banned_until[ip] = max(self._banned_until.get(ip, 0.0), self.clock() + seconds)

    def banned(self, ip: str) -> bool:
        return self._banned_until.get(ip, 0.0) > self.clock()

    def admit(self, ip: str) -> Verdict:
        """Count one call from ``ip``; refused while banned (not counted) or when it breaks a limit."""
        now = self.clock()
        usage = self._usage.setdefault(ip, _Usage())
        minute, hour = int(now) // MINUTE * MINUTE, int(now) // HOUR * HOUR
        if usage.minute_start != minute:
            usage.minute_start, usage.minute_count = minute, 0
        if usage.hour_start != hour:
            usage.hour_start, usage.hour_count = hour, 0
        if self.banned(ip):
            return Verdict(False, self._headers(usage))
        usage.minute_count += 1
        usage.hour_count += 1
        over_minute = self.per_minute is not None and usage.minute_count > self.per_minute
        over_hour = self.per_hour is not None and usage.hour_count > self.per_hour
        if over_minute or over_hour:
            self.ban(ip, self.ban_seconds)
            return Verdict(False, self._headers(usage))
        return Verdict(True, self._headers(usage))

    def _headers(self, usage: _Usage) -> dict[str, str]:
        if not self.headers:
            return {}
        return {
            "API-RateLimit-Remaining-Minute": str(_remaining(self.per_minute, usage.minute_count)),
            "API-RateLimit-Remaining-Hour": str(_remaining(self.per_hour, usage.hour_count)),
            "API-RateLimit-Reset-Minute": str(usage.minute_start + MINUTE),
            "API-RateLimit-Reset-Hour": str(usage.hour_start + HOUR),
        }


def _remaining(limit: int | None, used: int) -> int:
    # An unlimited window still needs a number in the header; report a large one.
    return max((limit if limit is not None else 1_000_000) - used, 0)
