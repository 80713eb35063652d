"""The store's part for the per-minute job counts: add a worker's counts, forget old minutes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs.dialects.minute_counts import (
    MinuteCountRow,
    add_minute_counts,
    delete_minute_counts,
)

# Bind parameters per statement stay far below every driver's limit (6 per row).
ROWS_PER_STATEMENT = 500


class MinuteCountStore:
    """Write the per-minute counts; mixed into `JobStore`, whose engine it uses."""

    engine: AsyncEngine

    async def add_minute_counts(self, rows: Sequence[MinuteCountRow]) -> None:
        """Add `rows` to the stored counts, in one transaction."""
        async with self.engine.begin() as connection:
            for start in range(0, len(rows), ROWS_PER_STATEMENT):
                chunk = rows[start : start + ROWS_PER_STATEMENT]
                await connection.execute(add_minute_counts(self.engine.dialect.name, chunk))

    async def delete_minute_counts(self, *, older_than: timedelta) -> int:
        """Delete the counts of minutes more than `older_than` ago; return how many rows."""
        async with self.engine.begin() as connection:
            result = await connection.execute(delete_minute_counts(older_than=older_than))
            return result.rowcount
