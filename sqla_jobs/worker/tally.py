"""Count the jobs a worker finished, once: per outcome type for `Worker.outcomes`, and per
minute, queue, task and outcome for the per-minute counters table and the summary log line;
keep the latest failures for `Worker.failures`."""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from datetime import UTC, datetime

from sqla_jobs.context import ClaimedJob
from sqla_jobs.execution import Completed, DeadLetter, DoneInTransaction, Outcome, Retry, Snoozed
from sqla_jobs.hooks import OutcomeName

# How many failed attempts `failures` keeps (the latest): a worker that runs for months stays small.
MAX_KEPT_FAILURES = 100

MinuteKey = tuple[int, str, str, OutcomeName]
"""(minute since the epoch, queue, task name, outcome)."""


OUTCOME_NAMES: dict[type[Outcome], OutcomeName] = {
    Completed: "success",
    DoneInTransaction: "success",
    Retry: "retry",
    Snoozed: "snoozed",
    DeadLetter: "dead",  # "cancelled" when cancelled on request
}
"""How hooks, metrics and the per-minute counts name each outcome type."""
_FAILURES = frozenset({Retry, DeadLetter})


class JobTally:
    """The jobs finished here, by outcome type since start, and by minute since the last
    `take()` (the worker's clock: each job counts in the minute it ended)."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        """How many jobs ended with each outcome type (``Completed``, ``Retry``, …)."""
        self.failures: deque[tuple[uuid.UUID, str, str]] = deque(maxlen=MAX_KEPT_FAILURES)
        """(job id, task name, error) of the latest failed attempts (Retry, DeadLetter)."""
        self._minutes: dict[MinuteKey, list[float]] = {}
        self.taken_at = time.monotonic()
        """When `take()` last ran (`time.monotonic()`), or the tally was made."""

    def add(
        self, job: ClaimedJob, outcome: Outcome, started: float, *, cancelled: bool
    ) -> OutcomeName:
        """Count `job`, run since `started` (`time.monotonic()`), that ended with `outcome`
        (`cancelled`: on request); return the outcome's name."""
        outcome_type = type(outcome)
        self.outcomes[outcome_type.__name__] += 1
        # Once per job: lookups by type, cheaper than a match and isinstance checks.
        name = OUTCOME_NAMES[outcome_type]
        if outcome_type in _FAILURES:
            self.failures.append((job.id, job.name, outcome.error))  # type: ignore[union-attr, arg-type]  # Retry | DeadLetter
            if cancelled:
                name = "cancelled"
        self.add_minute(job.queue, job.name, name, time.monotonic() - started)
        return name

    def add_minute(self, queue: str, name: str, outcome: OutcomeName, seconds: float) -> None:
        """Count one job of task `name` in `queue` that ended with `outcome` after `seconds`."""
        key = (int(time.time()) // 60, queue, name, outcome)
        entry = self._minutes.get(key)
        if entry is None:
            self._minutes[key] = [1, seconds]
        else:
            entry[0] += 1
            entry[1] += seconds

    def take(self) -> dict[MinuteKey, list[float]]:
        """Return the per-minute counts gathered since the last call, and start afresh."""
        taken, self._minutes = self._minutes, {}
        self.taken_at = time.monotonic()
        return taken

    def put_back(self, counts: dict[MinuteKey, list[float]], *, keep_after: int) -> None:
        """Return counts that could not be written, keeping minutes after `keep_after` only
        (older ones would be deleted by the retention anyway)."""
        for key, (count, seconds) in counts.items():
            if key[0] <= keep_after:
                continue
            entry = self._minutes.setdefault(key, [0, 0.0])
            entry[0] += count
            entry[1] += seconds


def minute_start(minute: int) -> datetime:
    """Return the UTC instant minute number `minute` since the epoch begins at."""
    return datetime.fromtimestamp(minute * 60, UTC)
