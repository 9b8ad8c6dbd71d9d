"""Every Redis key factsync writes, in one place. arq's own keys (`arq:job:*`, ...) are arq's."""

from __future__ import annotations

# arq's own key prefixes (arq.constants), spelt out: importing arq for two strings would cost every health
# check arq's worker, cron and connection modules. tests/test_handover.py holds them equal to arq's.
ARQ_JOB_PREFIX = "arq:job:"
ARQ_IN_PROGRESS_PREFIX = "arq:in-progress:"

PREFIX = "factsync"

QUEUE = f"{PREFIX}:queue"


def health_check() -> str:
    """arq writes its worker heartbeat here."""
    return f"{QUEUE}:health-check"


# All events by received time (score: microseconds since the epoch, see store.now_us).
EVENTS = f"{PREFIX}:events"


def event(event_id: str) -> str:
    return f"{PREFIX}:event:{event_id}"


def tries(event_id: str) -> str:
    """List: one JSON entry per try of a sync of the event (time, route, outcome, calls, duration)."""
    return f"{PREFIX}:event:{event_id}:tries"


def failures(bucket_start: int) -> str:
    """Counter: events that settled as failed in the 5 minutes from ``bucket_start`` (epoch seconds), kept
    when an operator retries them: the dashboard's failure rate is what happened, not what is left."""
    return f"{PREFIX}:failures:{bucket_start}"


def by_status(status: str) -> str:
    """Events in one status, by the time they entered it; ``by_status('failed')`` is the failed store."""
    return f"{PREFIX}:status:{status}"


def webhook(source: str, webhook_id: str) -> str:
    """webhook-id -> event id, so a re-delivery is answered with the original event."""
    return f"{PREFIX}:webhook:{source}:{webhook_id}"


def pending(route: str, document: str) -> str:
    """Event ids waiting for the next sync of one (route, document)."""
    return f"{PREFIX}:pending:{route}:{document}"


def scheduled(route: str, document: str) -> str:
    """Set while a sync job for (route, document) is queued and has not started: coalesces events."""
    return f"{PREFIX}:scheduled:{route}:{document}"


def lock(route: str, document: str) -> str:
    """The lease of the one task that may write (route, document)."""
    return f"{PREFIX}:lock:{route}:{document}"


def job(job_id: str) -> str:
    """arq's key for a queued job's body."""
    return ARQ_JOB_PREFIX + job_id


def in_progress(job_id: str) -> str:
    """arq's key for a job a worker has started: no other worker starts the job while it exists."""
    return ARQ_IN_PROGRESS_PREFIX + job_id


def rate(administration: str) -> str:
    """The shared rate limit's state (GCRA theoretical arrival time) for one administration."""
    return f"{PREFIX}:rate:{administration}"


def paused(administration: str) -> str:
    """Set while calls to an administration are paused after a ban."""
    return f"{PREFIX}:paused:{administration}"


# Hash: administration -> its role and calls per minute (JSON), as the newest worker to start applies them.
LIMITS = f"{PREFIX}:limits"


def mapping(route: str, kind: str, source_id: str) -> str:
    """A remembered id, source -> target, per route and kind; the markers in the target can rebuild it."""
    return f"{PREFIX}:map:{route}:{kind}:{source_id}"


def audit_checked(route: str) -> str:
    """Hash: source invoice id -> what the route's last audit found reading it whole (JSON), kept while an
    audit stopped half way may be resumed."""
    return f"{PREFIX}:audit:{route}:checked"


WORKERS = f"{PREFIX}:workers"


def worker(worker_id: str) -> str:
    """One worker process's heartbeat (a hash with a TTL): it disappears when the process stops beating."""
    return f"{PREFIX}:worker:{worker_id}"


def worker_jobs(worker_id: str) -> str:
    """The arq jobs one worker process has started and not finished: what a hand-over frees when it dies."""
    return f"{PREFIX}:worker:{worker_id}:jobs"


def handover(worker_id: str) -> str:
    """Taken (SET NX) by the one live worker that hands a dead worker's jobs on, so that happens once."""
    return f"{PREFIX}:handover:{worker_id}"
