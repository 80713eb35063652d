"""Rows written by hand for the admin tests: jobs, dead letters and workers in any state."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs.clock import db_now_plus
from sqla_jobs.models import DeadLetterJob, Job, WorkerRecord


async def add_job(
    engine: AsyncEngine,
    *,
    name: str = "tests.admin.job",
    queue: str = "admin",
    due_in: float = -10.0,
    created_ago: float = 60.0,
    error_count: int = 0,
    locked_by: str | None = None,
    cancel_reason: str | None = None,
    payload: dict[str, Any] | None = None,
    error: str | None = None,
    unique_key: str | None = None,
) -> uuid.UUID:
    """Insert a job row due `due_in` seconds from now (negative: in the past)."""
    job_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(Job).values(
                id=job_id,
                name=name,
                payload=payload if payload is not None else {"n": 1},
                queue=queue,
                priority=0,
                run_at=db_now_plus(due_in),
                created_at=db_now_plus(-created_ago),
                context="",
                error_count=error_count,
                last_error_message=error,
                last_failed_at=db_now_plus(-1) if error_count else None,
                locked_by=locked_by,
                locked_at=db_now_plus(-1) if locked_by else None,
                cancel_reason=cancel_reason,
                unique_key=unique_key,
            )
        )
    return job_id


async def add_dead_letter(
    engine: AsyncEngine,
    *,
    name: str = "tests.admin.job",
    queue: str = "admin",
    failed_ago: float = 60.0,
    original_job_id: uuid.UUID | None = None,
    unique_key: str | None = None,
    payload: dict[str, Any] | None = None,
) -> uuid.UUID:
    """Insert a dead letter of a job that failed `failed_ago` seconds ago."""
    dead_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(DeadLetterJob).values(
                id=dead_id,
                original_job_id=original_job_id or uuid.uuid4(),
                name=name,
                payload=payload if payload is not None else {"n": 1},
                queue=queue,
                priority=0,
                context="",
                error_count=3,
                last_error_message="Traceback (most recent call last):\nValueError: it failed",
                created_at=db_now_plus(-failed_ago - 100),
                failed_at=db_now_plus(-failed_ago),
                unique_key=unique_key,
            )
        )
    return dead_id


async def add_worker(engine: AsyncEngine, worker_id: str, *, heartbeat_ago: float = 1.0) -> None:
    """Register worker `worker_id`, its last heartbeat `heartbeat_ago` seconds ago."""
    async with engine.begin() as connection:
        await connection.execute(
            insert(WorkerRecord).values(
                id=worker_id,
                hostname="host-a",
                pid=4242,
                queues=["admin"],
                started_at=db_now_plus(-heartbeat_ago - 60),
                heartbeat_at=db_now_plus(-heartbeat_ago),
            )
        )
