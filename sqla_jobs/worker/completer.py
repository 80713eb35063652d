"""Write job outcomes back: successes in batches, retries and dead letters one guarded write each.

A job that succeeded waits here until the next flush: at most `max_delay`, or until `max_batch`
jobs have gathered. If the worker dies in between, the job's row is still locked, and the job
runs again once its lock expires, so delivery stays at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import assert_never

from loguru import logger
from sqlalchemy import bindparam
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sqla_jobs.dialects import JobStatements
from sqla_jobs.execution import Completed, CompletedInTransaction, DeadLetter, Outcome, Retry

# Transient trouble talking to the database: log, back off, try again; never exit over it.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError)
MAX_DATABASE_BACKOFF = timedelta(seconds=30)


def backoff_delay(failures: int) -> timedelta:
    """Return the wait after `failures` consecutive database errors: 0.2 s doubling to 30 s."""
    return min(timedelta(seconds=0.1 * 2 ** min(failures, 20)), MAX_DATABASE_BACKOFF)


class Completer:
    """Record what became of each job this worker ran.

    `autocommit` is `engine` with AUTOCOMMIT isolation, for the single-statement batch delete.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        autocommit: AsyncEngine,
        statements: JobStatements,
        worker_id: str,
        *,
        max_batch: int = 200,
        max_delay: timedelta = timedelta(milliseconds=5),
    ) -> None:
        self._engine = engine
        self._autocommit = autocommit
        self._statements = statements
        self._worker_id = worker_id
        self._max_batch = max_batch
        self._max_delay = max_delay.total_seconds()
        # Built once: constructing the statement cost more than running it, at every flush.
        self._complete = statements.complete_jobs(
            worker_id=worker_id, job_ids=bindparam("job_ids", expanding=True)
        )
        self._succeeded: list[uuid.UUID] = []
        self._has_succeeded = asyncio.Event()
        self._batch_full = asyncio.Event()

    async def record(self, job_id: uuid.UUID, outcome: Outcome, *, attempts: int) -> None:
        """Record `outcome`; a success is only queued for the next batch (no I/O).

        Retries and dead letters are written at once, retried up to `attempts` times on
        database errors; after that the job runs again when its lock expires.
        """
        match outcome:
            case Completed():
                logger.info("job completed")
                self._succeeded.append(job_id)
                self._has_succeeded.set()
                if len(self._succeeded) >= self._max_batch:
                    self._batch_full.set()
            case CompletedInTransaction(error=error):
                # Its row was deleted with its writes: nothing to write, nothing to retry.
                if error is None:
                    logger.info("job completed", in_transaction=True)
                else:
                    logger.error(
                        "job raised after its transaction completed it; not retried",
                        error=summarize_error(error),
                    )
            case Retry(error=error, delay=delay):
                if await self._write(job_id, outcome, attempts):
                    logger.warning(
                        "job failed; retrying",
                        retry_in=delay.total_seconds(),
                        error=summarize_error(error),
                    )
            case DeadLetter(error=error):
                if await self._write(job_id, outcome, attempts):
                    logger.error(
                        "job failed; moved to the dead-letter table", error=summarize_error(error)
                    )
            case _:
                assert_never(outcome)

    def wake(self) -> None:
        """Make `run` look at its `stopping` event now."""
        self._has_succeeded.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush batches of succeeded jobs until `stopping` is set; then call `flush` once more."""
        while not stopping.is_set():
            await self._has_succeeded.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), self._max_delay)
            await self.flush()

    async def flush(self, *, attempts: int | None = None) -> None:
        """Delete every succeeded job this worker still holds.

        Database errors are retried with backoff, forever unless `attempts` bounds them (as at
        shutdown, where the jobs left over run again once their locks expire).
        """
        failures = 0
        while self._succeeded:
            batch = self._succeeded[: self._max_batch]
            statement = self._complete
            try:
                async with self._autocommit.connect() as connection:
                    deleted = (await connection.execute(statement, {"job_ids": batch})).rowcount
            except DATABASE_ERRORS as exc:
                failures += 1
                if attempts is not None and failures >= attempts:
                    logger.error("completed jobs not deleted; they run again", count=len(batch))
                    return
                await _back_off("completing jobs failed", exc, failures)
                continue
            del self._succeeded[: len(batch)]
            if deleted != len(batch):
                logger.warning("lock lost; completed jobs not deleted", count=len(batch) - deleted)
        self._has_succeeded.clear()
        self._batch_full.clear()

    async def _write(self, job_id: uuid.UUID, outcome: Retry | DeadLetter, attempts: int) -> bool:
        for failures in range(1, attempts + 1):
            try:
                async with self._engine.begin() as connection:
                    held = await write_failure(
                        connection,
                        self._statements,
                        owner=self._worker_id,
                        job_id=job_id,
                        outcome=outcome,
                    )
            except DATABASE_ERRORS as exc:
                if failures == attempts:
                    logger.opt(exception=exc).error(
                        "job outcome not recorded; the job runs again after its lock expires"
                    )
                    return False
                await _back_off("recording job outcome failed", exc, failures)
                continue
            if not held:
                logger.warning("lock lost; the job's outcome was not recorded")
            return held
        return False


async def write_failure(
    connection: AsyncConnection,
    statements: JobStatements,
    *,
    owner: str,
    job_id: uuid.UUID,
    outcome: Retry | DeadLetter,
) -> bool:
    """Write a failed attempt of the job `owner` holds, in the open transaction.

    Returns False, having changed nothing, if `owner` no longer holds the job.
    """
    match outcome:
        case Retry(error=error, delay=delay):
            retry = statements.retry_job(worker_id=owner, job_id=job_id, error=error, delay=delay)
            return (await connection.execute(retry)).rowcount == 1
        case DeadLetter(error=error):
            return await dead_letter(
                connection, statements, owner=owner, job_id=job_id, error=error
            )
        case _:
            assert_never(outcome)


async def dead_letter(
    connection: AsyncConnection,
    statements: JobStatements,
    *,
    owner: str | None,
    job_id: uuid.UUID,
    error: str,
) -> bool:
    """Move the job `owner` holds (None: an unlocked job) to the dead-letter table.

    Returns False, having changed nothing, if the job is not held that way (any more).
    """
    copy, remove = statements.dead_letter_job(worker_id=owner, job_id=job_id, error=error)
    # The copy locks the row it copies: the delete removes exactly what was copied, or, when
    # the copy found nothing, nothing.
    await connection.execute(copy)
    return (await connection.execute(remove)).rowcount == 1


async def _back_off(what: str, exc: BaseException, failures: int) -> None:
    delay = backoff_delay(failures)
    logger.warning(
        what, error=summarize_error(str(exc)), failures=failures, retry_in=delay.total_seconds()
    )
    await asyncio.sleep(delay.total_seconds())


def summarize_error(error: str) -> str:
    """Return the last line of a traceback (or error message): the exception type and message.

    SQLAlchemy appends the statement (often many lines) and a documentation link to its
    messages; both are cut, so the line names the driver's error instead of the link.
    """
    head, sql, _ = error.strip().rpartition("\n[SQL: ")
    lines = [
        line
        for line in (head if sql else error.strip()).splitlines()
        if line.strip() and not line.startswith("(Background on this error at:")
    ]
    return lines[-1] if lines else ""
