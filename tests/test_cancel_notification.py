"""The cancel trigger's NOTIFY fits PostgreSQL's 8 000-byte payload limit, whatever the reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from sqla_jobs.admin import cancel
from sqla_jobs.ddl import CANCEL_REASON_MAX_BYTES
from sqla_jobs.dialects.postgresql import CANCEL_CHANNEL
from sqla_jobs.models import Job
from tests.helpers import TestDatabase

NOTIFY_MAX_BYTES = 8000


@pytest.fixture
async def pg_engine(pg_database: TestDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg_database.url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def cancel_notifications(pg_database: TestDatabase) -> AsyncIterator[asyncio.Queue[str]]:
    """The payloads of NOTIFY sqla_jobs_cancel, as a LISTENing connection receives them."""
    dsn = make_url(pg_database.url).set(drivername="postgresql")
    connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    received: asyncio.Queue[str] = asyncio.Queue()

    def on_notification(connection: Any, pid: int, channel: str, payload: str) -> None:
        received.put_nowait(payload)

    await connection.add_listener(CANCEL_CHANNEL, on_notification)
    try:
        yield received
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("character", "length"),
    [("€", 7000), ("😀", 7000), ("x", 10_000), ("é", 100)],
    ids=["3_byte_chars", "4_byte_chars", "ascii", "short"],
)
async def test_cancelling_a_running_job_with_a_long_non_ascii_reason_notifies_its_worker(
    pg_engine: AsyncEngine,
    cancel_notifications: asyncio.Queue[str],
    character: str,
    length: int,
) -> None:
    job_id = uuid.uuid4()
    reason = character * length
    async with pg_engine.begin() as connection:
        await connection.execute(
            insert(Job).values(
                id=job_id, name="tests.cancel", payload={}, context="", locked_by="worker-1"
            )
        )

    async with AsyncSession(pg_engine) as session:
        await session.execute(cancel(job_id, reason=reason))
        await session.commit()

    payload = await asyncio.wait_for(cancel_notifications.get(), timeout=10)
    assert payload.startswith(f"{job_id}:")
    assert len(payload.encode()) < NOTIFY_MAX_BYTES
    kept = payload.removeprefix(f"{job_id}:")
    # Whole characters, as many as fit: a cut never loses more than 3 bytes too many.
    assert reason.startswith(kept)
    expected_bytes = min(len(reason.encode()), CANCEL_REASON_MAX_BYTES)
    assert expected_bytes - 3 <= len(kept.encode()) <= expected_bytes
