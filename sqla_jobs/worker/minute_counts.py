"""Write the jobs a worker finished to the per-minute counts table (`MinuteCount`).

The runner counts each job once in its `JobTally`; maintenance writes what gathered once a
minute, and the shutdown writes the rest. A write that fails keeps its counts for the next.
"""

from __future__ import annotations

import time
from collections import Counter

from loguru import logger

from sqla_jobs.dialects.minute_counts import MinuteCountRow
from sqla_jobs.store import JobStore
from sqla_jobs.store.retrying import DATABASE_ERRORS, summarize_error
from sqla_jobs.throughput import RETENTION
from sqla_jobs.worker.tally import JobTally, minute_start


async def write_minute_counts(store: JobStore, tally: JobTally) -> None:
    """Add the counts `tally` gathered since the last write to the table, and log their totals
    per outcome at INFO. On a database error they are kept for the next write."""
    since = tally.taken_at
    taken = tally.take()
    totals: Counter[str] = Counter()
    rows: list[MinuteCountRow] = []
    for (minute, queue, name, outcome), (count, seconds) in taken.items():
        totals[outcome] += int(count)
        rows.append(
            MinuteCountRow(
                minute=minute_start(minute),
                queue=queue,
                name=name,
                outcome=outcome,
                count=int(count),
                duration_seconds=seconds,
            )
        )
    if not rows:
        return
    logger.info("jobs finished", seconds=round(tally.taken_at - since), **totals)
    try:
        await store.add_minute_counts(rows)
    except DATABASE_ERRORS as exc:
        oldest_kept = int(time.time() - RETENTION.total_seconds()) // 60
        tally.put_back(taken, keep_after=oldest_kept)
        logger.warning(
            "writing job counts failed; kept for the next try", error=summarize_error(str(exc))
        )


async def prune_minute_counts(store: JobStore) -> None:
    """Delete the counts of minutes older than `RETENTION`."""
    deleted = await store.delete_minute_counts(older_than=RETENTION)
    if deleted:
        logger.debug("old job counts deleted", rows=deleted)
