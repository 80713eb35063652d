"""Claim ahead: while jobs end faster than a claim comes back, claim the next ones early.

A worker draining short jobs would otherwise spend most of its time waiting for the next claim:
the jobs of one claim end within a millisecond, and the slots stay empty for a round trip. So,
while the recent runs are short (`SHORT_RUN`), the worker claims up to `concurrency` jobs more
than it has free slots, and the next claim is in flight while the current jobs run.

Every claimed job passes through here until a slot's task starts it (at once if a slot is
free). A job claimed ahead waits here, locked under the worker's lease like a running job,
until a slot frees up: about one run of a short job, less than the claim it saves. Once runs get
longer the worker claims for its free slots only, so it never sits on jobs that another worker
could start.
Waiting jobs start in the order they were claimed; a shutdown, a lost lease or a cancel request
releases them without running them.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter, deque

from sqla_jobs.context import ClaimedJob

# The longest recent average run (seconds) under which the worker claims ahead. A claim under
# load takes a few milliseconds; a job that waits behind runs this short waits less than that.
SHORT_RUN = 0.005
# The weight of the latest run in the recent average: about the last 20 runs count.
LATEST_WEIGHT = 0.1


class ClaimAhead:
    """The jobs claimed and not started yet, and how many of them may wait for a slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        """At most this many jobs wait at once (0: never claim ahead)."""
        self._waiting: deque[tuple[ClaimedJob, str]] = deque()
        self._average_run = math.inf  # nothing has run yet: claim for free slots only

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def extra(self) -> int:
        """How many jobs may wait here beyond the free slots now: `limit` while runs are
        short, else none."""
        return 0 if self._average_run >= SHORT_RUN else self.limit

    def observe(self, seconds: float) -> None:
        """Count a run that took `seconds` in the recent average."""
        if self._average_run == math.inf:
            self._average_run = seconds
        else:
            self._average_run += LATEST_WEIGHT * (seconds - self._average_run)

    def push(self, job: ClaimedJob, owner: str) -> None:
        """Keep `job`, claimed under `owner`, until a slot's task starts it."""
        self._waiting.append((job, owner))

    def pop(self) -> tuple[ClaimedJob, str] | None:
        """Return the job claimed first of those waiting, with its owner, or None."""
        return self._waiting.popleft() if self._waiting else None

    def remove(self, job_id: uuid.UUID) -> str | None:
        """Stop keeping job `job_id`; return the owner it was claimed under, or None."""
        for index, (job, owner) in enumerate(self._waiting):
            if job.id == job_id:
                del self._waiting[index]
                return owner
        return None

    def take_all(self, owner: str | None = None) -> dict[str, list[uuid.UUID]]:
        """Stop keeping the jobs of `owner` (of every owner if None); return their ids by owner."""
        taken: dict[str, list[uuid.UUID]] = {}
        kept: deque[tuple[ClaimedJob, str]] = deque()
        for job, job_owner in self._waiting:
            if owner is None or job_owner == owner:
                taken.setdefault(job_owner, []).append(job.id)
            else:
                kept.append((job, job_owner))
        self._waiting = kept
        return taken

    def count_by_queue(self) -> Counter[str]:
        """Return how many jobs of each queue wait here."""
        return Counter(job.queue for job, _ in self._waiting)

    def ids(self, owner: str) -> set[uuid.UUID]:
        """Return the ids of the jobs waiting under `owner`."""
        return {job.id for job, job_owner in self._waiting if job_owner == owner}
