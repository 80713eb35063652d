"""Write job outcomes back through the store: successes in batches, failures one by one.

A job that succeeded waits here until the next flush: at most `max_delay`, or until `max_batch`
jobs have gathered. If the worker dies in between, the job's row is still locked; it is rescued
once the worker's lease expires, and runs again: delivery stays at least once. Every write is
guarded by the lease id that claimed the job, so a lost lease never writes over a new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import assert_never

from loguru import logger

from sqla_jobs.execution import (
    Completed,
    DeadLetter,
    DoneInTransaction,
    Outcome,
    Retry,
    Snoozed,
)
from sqla_jobs.store import JobStore
from sqla_jobs.store.retrying import GaveUp, retry_database, summarize_error

# A failed attempt is written this many times before the job is left to the lease's
# reconciliation (which releases it, so it runs again).
WRITE_ATTEMPTS = 6
# With this many batches of succeeded jobs waiting for their delete, the worker claims no more
# until the deletes catch up: a slow database (or a bad plan) would otherwise let it hold ever
# more finished jobs, in memory and locked in the table, each delete slower than the last. A
# drain of no-op jobs at 25 000 a second peaks at 1 200 waiting (measured), so 2 000 leaves a
# healthy worker alone: at 800, it paused 300 times per 30 000 jobs and lost a sixth of its rate.
BEHIND_BATCHES = 10
# A delete takes every waiting success up to this many (one array parameter, one prepared
# statement for any size): a recorder that fell behind catches up in fewer round trips.
MOST_PER_DELETE = 1_000


class OutcomeRecorder:
    """Record what became of each job this worker ran."""

    def __init__(
        self,
        store: JobStore,
        *,
        max_batch: int = 200,
        max_delay: timedelta = timedelta(milliseconds=5),
        on_caught_up: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._on_caught_up = on_caught_up
        self._behind = False
        self._behind_at = max_batch * BEHIND_BATCHES
        self._max_batch = max_batch
        self._max_delay = max_delay.total_seconds()
        self._succeeded: list[tuple[str, uuid.UUID]] = []
        self._writing: set[uuid.UUID] = set()
        self._has_succeeded = asyncio.Event()
        self._batch_full = asyncio.Event()

    def pending_ids(self) -> set[uuid.UUID]:
        """Return the ids of jobs whose outcome is not written yet."""
        return {job_id for _, job_id in self._succeeded} | self._writing

    @property
    def is_behind(self) -> bool:
        """Tell whether so many succeeded jobs wait for their delete that the worker should
        claim no more until they are written (`on_caught_up` is called then)."""
        return self._behind

    @property
    def has_pending(self) -> bool:
        """Tell whether any outcome is still to be written."""
        return bool(self._succeeded or self._writing)

    async def record(self, owner: str, job_id: uuid.UUID, outcome: Outcome) -> None:
        """Record `outcome` of the job `owner` holds; a success is only queued (no I/O)."""
        match outcome:
            case Completed():
                # DEBUG: at INFO a line per success cost more than running a no-op job
                # (~130 µs against ~10 µs); `maintenance` logs a summary at INFO instead.
                logger.debug("job completed")
                self._succeeded.append((owner, job_id))
                self._has_succeeded.set()
                if len(self._succeeded) >= self._max_batch:
                    self._batch_full.set()
                    if len(self._succeeded) >= self._behind_at:
                        self._fall_behind()
            case DoneInTransaction(error=error):
                # Its row was deleted with its writes: nothing to write, nothing to retry.
                if error is None:
                    logger.debug("job completed", in_transaction=True)
                else:
                    logger.error(
                        "job raised after its transaction completed it; not retried",
                        error=summarize_error(error),
                    )
            case Retry(error=error, delay=delay):
                if await self._write(owner, job_id, outcome):
                    logger.warning(
                        "job failed; retrying",
                        retry_in=delay.total_seconds(),
                        error=summarize_error(error),
                    )
            case Snoozed(delay=delay):
                if await self._write(owner, job_id, outcome):
                    logger.info("job snoozed", run_in=delay.total_seconds())
            case DeadLetter(error=error):
                if await self._write(owner, job_id, outcome):
                    logger.error(
                        "job failed; moved to the dead-letter table", error=summarize_error(error)
                    )
            case _:
                assert_never(outcome)

    def wake(self) -> None:
        """Make `run` look at its `stopping` event now, without waiting for a batch to fill."""
        self._has_succeeded.set()
        self._batch_full.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush batches of succeeded jobs until `stopping` is set."""
        while not stopping.is_set():
            await self._has_succeeded.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), self._max_delay)
            await self.flush(stopping=stopping)

    async def flush(
        self, *, attempts: int | None = None, stopping: asyncio.Event | None = None
    ) -> bool:
        """Delete every succeeded job still held; True once nothing is left to delete.

        Database errors are retried with backoff: forever, unless `attempts` bounds them or
        `stopping` is set (the shutdown then flushes once more, with bounded attempts).
        """
        while self._succeeded:
            batch = self._succeeded[:MOST_PER_DELETE]
            try:
                deleted = await retry_database(
                    lambda batch=batch: self._delete(batch),  # type: ignore[misc]
                    what="completing jobs failed",
                    attempts=attempts,
                    stopping=stopping,
                )
            except GaveUp:
                if attempts is not None:
                    logger.error("completed jobs not deleted; they run again", count=len(batch))
                return False
            del self._succeeded[: len(batch)]
            if deleted != len(batch):
                logger.warning("lock lost; completed jobs not deleted", count=len(batch) - deleted)
            if self._behind and len(self._succeeded) < self._behind_at:
                self._behind = False
                logger.info("deletes caught up; claiming again", waiting=len(self._succeeded))
                self._on_caught_up()
        self._has_succeeded.clear()
        self._batch_full.clear()
        return True

    def _fall_behind(self) -> None:
        if not self._behind:
            self._behind = True
            logger.warning(
                "deleting finished jobs is falling behind; claiming paused until it catches up",
                waiting=len(self._succeeded),
            )

    async def _delete(self, batch: list[tuple[str, uuid.UUID]]) -> int:
        by_owner: dict[str, list[uuid.UUID]] = {}
        for owner, job_id in batch:
            by_owner.setdefault(owner, []).append(job_id)
        deleted = 0
        for owner, job_ids in by_owner.items():
            deleted += await self._store.delete_jobs(worker_id=owner, job_ids=job_ids)
        return deleted

    async def _write(
        self, owner: str, job_id: uuid.UUID, outcome: Retry | Snoozed | DeadLetter
    ) -> bool:
        self._writing.add(job_id)
        try:
            held = await retry_database(
                lambda: self._store.write_failure(owner=owner, job_id=job_id, outcome=outcome),
                what="recording job outcome failed",
                attempts=WRITE_ATTEMPTS,
            )
        except GaveUp as exc:
            logger.opt(exception=exc.__cause__).error(
                "job outcome not recorded; the job will be released and run again"
            )
            return False
        except Exception as exc:
            # A row the database refuses to store (a value out of range, say): release it.
            logger.opt(exception=exc).error("job outcome cannot be stored; the job runs again")
            return False
        finally:
            self._writing.discard(job_id)
        if not held:
            logger.warning("lock lost; the job's outcome was not recorded")
        return held
