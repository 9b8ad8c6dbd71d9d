"""The one retry policy: exponential backoff with full jitter, bounded in tries and in time."""

from __future__ import annotations

import random

from worker.config import RetrySettings


def backoff(attempt: int, policy: RetrySettings, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed try ``attempt`` (1-based): uniform in [0, min(cap, base * 2^(n-1))].

    Full jitter spreads the retries of many workers hitting one failing target (AWS architecture blog,
    "Exponential Backoff And Jitter").
    """
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(0, ceiling)


def give_up_reason(attempt: int, elapsed: float, next_delay: float, policy: RetrySettings) -> str | None:
    """Why no further try should be made, or None while tries and time remain."""
    if attempt >= policy.max_tries:
        return f"gave up after {attempt} tries"
    if elapsed + next_delay > policy.max_span:
        return f"gave up after {attempt} tries in {elapsed:.0f} s (retry span {policy.max_span:.0f} s)"
    return None
