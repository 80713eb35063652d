"""The operations that change the queue, for the CLI, the dashboard and scripts alike.

`retry_dead_letters` and `delete_dead_letters` commit after each batch, so a long run holds no
lock for long and what it did stays done if it is interrupted. `cancel_jobs` and
`enqueue_by_name` work in the caller's transaction, as `cancel()` and `enqueue()` do: commit to
apply them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from sqla_jobs.enqueue import enqueue
from sqla_jobs.errors import PayloadError
from sqla_jobs.models import Job
from sqla_jobs.tasks import get_task
from sqla_jobs.worker_options import describe_errors

from .statements import (
    DEFAULT_CANCEL_REASON,
    DEFAULT_REDRIVE_BATCH_SIZE,
    cancel_many,
    purge,
    redrive,
)

BatchCallback = Callable[[int], None]
"""Told how many dead letters each committed batch moved or deleted (for a progress bar)."""


async def retry_dead_letters(
    session: AsyncSession,
    ids: Iterable[uuid.UUID] | None = None,
    *,
    queue: str | None = None,
    name: str | None = None,
    failed_before: datetime | None = None,
    failed_after: datetime | None = None,
    older_than: timedelta | None = None,
    batch_size: int = DEFAULT_REDRIVE_BATCH_SIZE,
    limit: int | None = None,
    on_batch: BatchCallback | None = None,
) -> int:
    """Move the matching dead letters back into the queue as fresh jobs; return how many.

    Which ones, and what they become: see `redrive()`. Batches of `batch_size`, each in a
    transaction of its own, committed before the next starts; at most `limit` in all (None:
    all that match). A unique job whose key is taken again stays a dead letter. Safe to run
    concurrently: two runs never retry one dead letter twice.

    >>> retried = await retry_dead_letters(session, queue="mail", older_than=timedelta(hours=1))
    """
    chosen = _dead_letter_choice(ids, queue, name, failed_before, failed_after, older_than)

    async def one_batch(size: int) -> int:
        statements = redrive(batch_size=size, **chosen)
        await session.execute(statements.insert)
        return _rowcount(await session.execute(statements.delete))

    return await _in_batches(session, one_batch, batch_size, limit, on_batch)


async def delete_dead_letters(
    session: AsyncSession,
    ids: Iterable[uuid.UUID] | None = None,
    *,
    queue: str | None = None,
    name: str | None = None,
    failed_before: datetime | None = None,
    failed_after: datetime | None = None,
    older_than: timedelta | None = None,
    batch_size: int = DEFAULT_REDRIVE_BATCH_SIZE,
    limit: int | None = None,
    on_batch: BatchCallback | None = None,
) -> int:
    """Delete the matching dead letters for good; return how many.

    Which ones: as for `retry_dead_letters`, in batches committed one by one the same way.

    >>> deleted = await delete_dead_letters(session, older_than=timedelta(days=7))
    """
    chosen = _dead_letter_choice(ids, queue, name, failed_before, failed_after, older_than)

    async def one_batch(size: int) -> int:
        return _rowcount(await session.execute(purge(batch_size=size, **chosen)))

    return await _in_batches(session, one_batch, batch_size, limit, on_batch)


async def cancel_jobs(
    session: AsyncSession, ids: Iterable[uuid.UUID], reason: str = DEFAULT_CANCEL_REASON
) -> int:
    """Cancel each job of `ids` (see `cancel()`); return how many were still there to cancel.

    Runs in the caller's transaction: the cancellations take effect when it commits.

    >>> cancelled = await cancel_jobs(session, [job_id], reason="customer deleted")
    >>> await session.commit()
    """
    chosen = list(dict.fromkeys(ids))
    if not chosen:
        return 0
    return _rowcount(await session.execute(cancel_many(chosen, reason=reason)))


async def enqueue_by_name(
    session: AsyncSession,
    name: str,
    payload: dict[str, Any] | str,
    *,
    queue: str | None = None,
    priority: int | None = None,
    run_at: datetime | None = None,
    delay: timedelta | None = None,
    context: str = "",
) -> Job:
    """Add a job of the task registered as `name` to `session`; it exists once you commit.

    `payload` (a dict, or its JSON text) is validated by the task's model, as constructing
    the task would. Raises `UnknownTaskError` when no task has that name (import the module
    that defines it first), `PayloadError` for JSON that does not parse or a payload the task
    refuses, `EnqueueError` for bad options. The options mean what they mean for `enqueue()`.

    >>> job = await enqueue_by_name(session, "send_email", '{"to": "a@example.com"}')
    >>> await session.commit()
    """
    task_class = get_task(name)
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise PayloadError(f"the payload is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise PayloadError(f"the payload must be a JSON object, not {type(payload).__name__}")
    try:
        task = task_class.model_validate(payload)
    except ValidationError as exc:
        raise PayloadError(f"invalid payload for task {name!r}: {describe_errors(exc)}") from None
    job = enqueue(task, queue=queue, priority=priority, run_at=run_at, delay=delay, context=context)
    session.add(job)
    return job


def _dead_letter_choice(
    ids: Iterable[uuid.UUID] | None,
    queue: str | None,
    name: str | None,
    failed_before: datetime | None,
    failed_after: datetime | None,
    older_than: timedelta | None,
) -> dict[str, Any]:
    """Return the arguments of `redrive()` and `purge()` that choose the dead letters."""
    return {
        # Listed once: every batch reads `ids` again, and an iterator would be spent by then.
        "ids": list(ids) if ids is not None else None,
        "queue": queue,
        "name": name,
        "failed_before": failed_before,
        "failed_after": failed_after,
        "older_than": older_than,
    }


async def _in_batches(
    session: AsyncSession,
    one_batch: Callable[[int], Any],
    batch_size: int,
    limit: int | None,
    on_batch: BatchCallback | None,
) -> int:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be an int >= 0 or None, not {limit!r}")
    done = 0
    while limit is None or done < limit:
        size = batch_size if limit is None else min(batch_size, limit - done)
        try:
            count: int = await one_batch(size)
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        # 0: nothing (more) matches, or every match is skipped (its unique key is taken).
        if count == 0:
            break
        done += count
        if on_batch is not None:
            on_batch(count)
    return done


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount
