"""The shared API budget: one rate limit per administration across all workers and hosts (GCRA in Redis).

A WeFact 403 (IP ban) pauses every call to that administration for a while; what the server reports in
its API-RateLimit-* headers slows this process down before the limit is reached. Bulk calls (a backfill's
or an audit's) never use the burst, which stays for the hooks' syncs: those go first.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from redis.asyncio import Redis

from tasks.errors import RateLimited
from worker import keys
from worker.redisio import done, text

if TYPE_CHECKING:  # an annotation only: `status` and `failed` need not import the HTTP client
    from tasks.client import RateLimit

# GCRA: one theoretical arrival time per administration, in Redis time so that host clocks do not matter.
# KEYS: tat, pause   ARGV: interval ms, tolerance ms. Returns {1, 0} (go) or {0, wait ms} or {-1, paused ms}.
_ACQUIRE = """
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return {-1, paused} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tonumber(ARGV[2]) - now
if wait > 0 then return {0, wait} end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
return {1, 0}
"""


Role = Literal["source", "target"]


@dataclass(frozen=True, slots=True)
class Limit:
    """An administration's place in the sync and the calls a minute every worker together may make."""

    role: Role
    per_minute: int


async def publish_limits(redis: Redis, limits: dict[str, Limit]) -> None:
    """Say what budget this worker applies, for `status` and the dashboard, which need no configuration
    but Redis's; the newest worker's word replaces the last, so an administration taken out goes."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.LIMITS)
        if limits:
            entries = {name: json.dumps(asdict(limit)) for name, limit in limits.items()}
            pipe.hset(keys.LIMITS, mapping=entries)
        await pipe.execute()


async def published_limits(redis: Redis) -> dict[str, Limit]:
    """The limits the newest worker published (none before a worker started); a garbled one is left out."""
    found: dict[str, Limit] = {}
    for name, value in (await done(redis.hgetall(keys.LIMITS))).items():
        try:
            entry = json.loads(value)
            limit = Limit(entry["role"], int(entry["per_minute"]))
        except (ValueError, TypeError, KeyError):
            continue
        if limit.role in ("source", "target") and limit.per_minute > 0:
            found[text(name)] = limit
    return found


# Whether the calls made in this context (an asyncio task and what it starts) are bulk work.
_BULK: ContextVar[bool] = ContextVar("factsync_bulk_calls", default=False)


class bulk_calls:
    """Make the calls inside the block bulk calls (when ``bulk``), as ``with`` or ``async with``.

    A bulk call goes only when the administration's budget has not been dipped into (GCRA with no
    tolerance), so the burst is always there for a hook's sync: it starts at once while a backfill keeps the
    budget busy, and the two together never exceed it. The mark is a context variable: it holds for the
    task that set it and the tasks it starts, never for another job's.
    """

    def __init__(self, bulk: bool = True) -> None:
        self.bulk = bulk
        self._token: Token[bool] | None = None

    def __enter__(self) -> None:
        if self.bulk:
            self._token = _BULK.set(True)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _BULK.reset(self._token)
            self._token = None

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


@dataclass(frozen=True, slots=True)
class LimitEvent:
    """What the limiter did, for an observer (metrics): it waited, refused a call, or paused after a ban."""

    administration: str
    kind: Literal["wait", "budget", "paused", "ban"]
    seconds: float = 0.0


class SharedRateLimit:
    """The runtime's `tasks.client.Throttle`: ``limits`` maps an administration to its calls per minute.

    ``on_event`` is told each wait, refusal and ban, the way the API client's ``on_call`` is told each call.
    """

    def __init__(
        self,
        redis: Redis,
        limits: dict[str, int],
        *,
        burst: int = 5,
        max_wait: float = 5.0,
        reserve: int = 2,
        on_event: Callable[[LimitEvent], None] | None = None,
        wait_paused: bool = False,
        bulk_max_wait: float = 30.0,
    ) -> None:
        self.redis = redis
        self.limits = limits
        self.burst = burst
        self.max_wait = max_wait
        self.reserve = reserve
        self.on_event = on_event
        # An operator's command waits out a ban pause within ``max_wait`` (telling ``on_event``); a worker
        # gives the job back to its retry loop at once.
        self.wait_paused = wait_paused
        # A bulk call waits longer for its slot before giving up: it is not in a hurry, its run keeps only a
        # few syncs going at once, and a sync given back to the retry loop would read the source again.
        self.bulk_max_wait = bulk_max_wait
        self._reported: dict[str, RateLimit] = {}
        self._acquire = redis.register_script(_ACQUIRE)

    async def acquire(self, administration: str) -> None:
        """Wait for a slot (at most ``max_wait`` seconds), else raise RateLimited with the time to wait."""
        deadline = time.monotonic() + (
            max(self.max_wait, self.bulk_max_wait) if _BULK.get() else self.max_wait
        )
        per_minute = self.limits.get(administration)
        while True:
            wait = self._server_says_wait(administration)
            if wait <= 0 and per_minute:
                interval = 60_000 / per_minute
                tolerance = 0 if _BULK.get() else interval * (self.burst - 1)
                code, ms = await self._acquire(
                    keys=[keys.rate(administration), keys.paused(administration)],
                    args=[interval, tolerance],
                )
                if int(code) == 1:
                    return
                wait = int(ms) / 1000
                if int(code) == -1:
                    if self.wait_paused and time.monotonic() + wait <= deadline:
                        self._tell(LimitEvent(administration, "paused", wait))
                        await asyncio.sleep(wait)
                        continue
                    self._tell(LimitEvent(administration, "paused"))
                    raise RateLimited(
                        f"calls to {administration} are paused after a ban (HTTP 403)", retry_after=wait
                    )
            elif wait <= 0:
                return
            if time.monotonic() + wait > deadline:
                self._tell(LimitEvent(administration, "budget"))
                raise RateLimited(f"the API budget of {administration} is spent", retry_after=wait)
            self._tell(LimitEvent(administration, "wait", wait))
            await asyncio.sleep(wait)

    def observe(self, administration: str, rate_limit: RateLimit) -> None:
        self._reported[administration] = rate_limit

    def _server_says_wait(self, administration: str) -> float:
        reported = self._reported.get(administration)
        if reported is None or reported.remaining_minute is None or reported.reset_minute is None:
            return 0.0
        if reported.remaining_minute > self.reserve:
            return 0.0
        return max(0.0, reported.reset_minute - time.time())

    async def pause(self, administration: str, seconds: float) -> None:
        """After a 403 ban: no worker calls this administration for ``seconds``."""
        self._tell(LimitEvent(administration, "ban", seconds))
        await self.redis.set(keys.paused(administration), "banned", px=int(seconds * 1000))

    async def paused_for(self, administration: str) -> float:
        ms = int(await self.redis.pttl(keys.paused(administration)))
        return max(0.0, ms / 1000)

    async def available(self, administration: str) -> int:
        """How many calls the administration may take right now, of its burst."""
        per_minute = self.limits.get(administration)
        if not per_minute:
            return self.burst
        interval = 60_000 / per_minute
        seconds, micros = await self.redis.time()
        now = int(seconds) * 1000 + int(micros) / 1000
        tat = await done(self.redis.get(keys.rate(administration)))
        # GCRA, as _ACQUIRE: a call may go when tat - tolerance <= now; each call moves tat on one interval.
        spare = now + interval * (self.burst - 1) - (float(tat) if tat else now)
        return max(0, min(self.burst, math.floor(spare / interval) + 1))

    def _tell(self, event: LimitEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
