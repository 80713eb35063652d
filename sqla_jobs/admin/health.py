"""Is the queue healthy? The database answers, its schema is at head, a worker is alive.

The schema is judged by the same rule as the worker's startup check (`migrate.schema_problem`),
so the two never disagree.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from sqla_jobs.database_errors import DATABASE_ERRORS, summarize_error
from sqla_jobs.migrate import read_applied, schema_problem
from sqla_jobs.urls import display_url

from .overview import DEFAULT_HEARTBEAT_TIMEOUT, workers
from .records import CheckResult, HealthReport

_NOT_CHECKED = "not checked: {} failed"


async def check(
    session: AsyncSession, *, heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT
) -> HealthReport:
    """Check the database behind `session`, its sqla_jobs schema, and its workers.

    Three results, in order: ``database`` (it answers a query), ``schema`` (at this version's
    head), ``workers`` (at least one heartbeat younger than `heartbeat_timeout`). A check whose
    premise failed is reported failed, "not checked". Never raises for a database that is down
    or refuses: that is a failed result.

    >>> report = await check(session)
    >>> report.ok
    True
    """
    database = _name(session)
    try:
        await session.execute(select(1))
    except DATABASE_ERRORS as exc:
        await _rollback(session)
        reason = summarize_error(str(exc)) or type(exc).__name__
        return HealthReport(
            (
                CheckResult("database", False, f"cannot query {database}: {reason}"),
                CheckResult("schema", False, _NOT_CHECKED.format("database")),
                CheckResult("workers", False, _NOT_CHECKED.format("database")),
            )
        )
    reachable = CheckResult("database", True, f"{database} answers")
    try:
        applied = await session.run_sync(lambda sync: read_applied(_connection(sync)))
    except DATABASE_ERRORS as exc:
        await _rollback(session)
        reason = summarize_error(str(exc)) or type(exc).__name__
        problem: str | None = f"cannot read the schema version of {database}: {reason}"
    else:
        problem = schema_problem(applied, database=database)
    if problem is not None:
        schema = CheckResult("schema", False, problem)
        return HealthReport(
            (reachable, schema, CheckResult("workers", False, _NOT_CHECKED.format("schema")))
        )
    schema = CheckResult("schema", True, f"at head {', '.join(sorted(applied))}")
    return HealthReport((reachable, schema, await _check_workers(session, heartbeat_timeout)))


async def _check_workers(session: AsyncSession, heartbeat_timeout: timedelta) -> CheckResult:
    try:
        registered = await workers(session, heartbeat_timeout=heartbeat_timeout)
    except DATABASE_ERRORS as exc:
        await _rollback(session)
        reason = summarize_error(str(exc)) or type(exc).__name__
        return CheckResult("workers", False, f"cannot read the workers: {reason}")
    alive = [worker for worker in registered if worker.is_alive]
    if alive:
        newest = min(worker.heartbeat_age for worker in alive)
        return CheckResult(
            "workers",
            True,
            f"{len(alive)} live worker(s), the latest heartbeat {newest:.1f} s ago",
        )
    if not registered:
        return CheckResult("workers", False, "no worker is registered")
    latest = min(worker.heartbeat_age for worker in registered)
    return CheckResult(
        "workers",
        False,
        f"no live worker: {len(registered)} registered, the latest heartbeat {latest:.1f} s ago "
        f"(over {heartbeat_timeout.total_seconds():g} s)",
    )


def _name(session: AsyncSession) -> str:
    return display_url(session.get_bind().engine.url)


def _connection(session: Session) -> Connection:
    return session.connection()


async def _rollback(session: AsyncSession) -> None:
    # A failed statement aborts a PostgreSQL transaction; the next check needs a fresh one.
    with contextlib.suppress(*DATABASE_ERRORS):
        await session.rollback()
