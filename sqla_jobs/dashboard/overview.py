"""The overview page's numbers: per-queue counts, live workers, the last hour's throughput."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sqla_jobs import admin


async def overview_context(session: AsyncSession) -> dict[str, Any]:
    """Return what the overview shows, read in `session`."""
    queues = await admin.queue_stats(session)
    workers = await admin.workers(session)
    return {
        "queues": queues,
        "live_workers": sum(1 for worker in workers if worker.is_alive),
    }
