"""What a claim takes: the best due, waiting jobs across the served queues, in the documented order.

Best first is `priority` descending, then `run_at` (the job due longest first), then `id`.
Never a job that is in the future, held by a worker, cancelled, or in a queue not served.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Dialect, insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ClauseElement

from sqla_jobs.clock import db_now_plus
from sqla_jobs.dialects import JobStatements, statements_for
from sqla_jobs.dialects.postgresql import PostgreSQLStatements
from sqla_jobs.dialects.sqlite import SQLiteStatements
from sqla_jobs.models import Job
from tests.helpers import TestDatabase

SERVED = ["a", "b", "c"]


def job_id(label: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_OID, label)


async def add_job(
    engine: AsyncEngine,
    label: str,
    *,
    queue: str,
    priority: int = 0,
    due_seconds_ago: float | None = None,
    run_at: datetime | None = None,
    id_: uuid.UUID | None = None,
    **columns: Any,
) -> None:
    """Insert job `label`, due `due_seconds_ago` by the database's clock (negative: future)."""
    when: Any = run_at if run_at is not None else db_now_plus(-(due_seconds_ago or 0.0))
    async with engine.begin() as connection:
        await connection.execute(
            insert(Job).values(
                id=id_ or job_id(label),
                name=label,
                payload={},
                queue=queue,
                priority=priority,
                context="",
                error_count=0,
                run_at=when,
                **columns,
            )
        )


async def claim(
    engine: AsyncEngine, database: TestDatabase, queues: Sequence[str], limit: int
) -> set[str]:
    statement = statements_for(database.dialect).claim_jobs(
        worker_id="claimer", queues=queues, limit=limit
    )
    async with engine.begin() as connection:
        return {row.name for row in await connection.execute(statement)}


async def test_a_multi_queue_claim_takes_the_best_due_jobs_across_queues_in_order(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add_job(engine, "a5-due-30s", queue="a", priority=5, due_seconds_ago=30)
    await add_job(engine, "a5-due-10s", queue="a", priority=5, due_seconds_ago=10)
    await add_job(engine, "a0-due-60s", queue="a", priority=0, due_seconds_ago=60)
    await add_job(engine, "b5-due-20s", queue="b", priority=5, due_seconds_ago=20)
    await add_job(engine, "c1-due-5s", queue="c", priority=1, due_seconds_ago=5)
    # Never claimable: a better priority each, but future, held, cancelled or not served.
    await add_job(engine, "b9-future", queue="b", priority=9, due_seconds_ago=-60)
    await add_job(engine, "b9-held", queue="b", priority=9, due_seconds_ago=90, locked_by="someone")
    await add_job(
        engine, "c7-cancelled", queue="c", priority=7, due_seconds_ago=90, cancel_reason="no"
    )
    await add_job(engine, "z9-not-served", queue="z", priority=9, due_seconds_ago=90)

    # Priority 5 first, the job due longest first, whichever queue holds it.
    assert await claim(engine, database, SERVED, limit=2) == {"a5-due-30s", "b5-due-20s"}
    assert await claim(engine, database, SERVED, limit=1) == {"a5-due-10s"}
    assert await claim(engine, database, SERVED, limit=1) == {"c1-due-5s"}
    assert await claim(engine, database, SERVED, limit=10) == {"a0-due-60s"}
    assert await claim(engine, database, SERVED, limit=10) == set()


async def test_a_single_queue_claim_takes_equal_priorities_in_the_order_they_became_due(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    # Inserted in the opposite order of their run_at: the claim follows run_at.
    await add_job(engine, "due-1s", queue="a", due_seconds_ago=1)
    await add_job(engine, "due-2s", queue="a", due_seconds_ago=2)
    await add_job(engine, "due-3s", queue="a", due_seconds_ago=3)
    await add_job(engine, "future", queue="a", due_seconds_ago=-3600)

    claimed = [await claim(engine, database, ["a"], limit=1) for _ in range(4)]

    assert claimed == [{"due-3s"}, {"due-2s"}, {"due-1s"}, set()]


async def test_jobs_due_at_the_same_instant_are_claimed_by_id(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    instant = datetime(2020, 1, 1, tzinfo=UTC)
    for n in (3, 1, 2):
        await add_job(engine, f"id-{n}", queue="a", run_at=instant, id_=uuid.UUID(int=n))

    claimed = [await claim(engine, database, ["a", "b"], limit=1) for _ in range(3)]

    assert claimed == [{"id-1"}, {"id-2"}, {"id-3"}]


async def test_next_due_is_the_earliest_future_job_a_claim_could_take(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    statement = statements_for(database.dialect).next_due(queues=SERVED)
    async with engine.connect() as connection:
        nothing, _ = (await connection.execute(statement)).one()
    assert nothing is None

    await add_job(engine, "a-due", queue="a", due_seconds_ago=5)
    await add_job(engine, "a-in-100s", queue="a", due_seconds_ago=-100)
    await add_job(engine, "b-in-200s", queue="b", due_seconds_ago=-200)
    # Earlier, but never claimable: held, cancelled, or in a queue not served.
    await add_job(engine, "b-held", queue="b", due_seconds_ago=-10, locked_by="someone")
    await add_job(engine, "c-cancelled", queue="c", due_seconds_ago=-10, cancel_reason="no")
    await add_job(engine, "z-not-served", queue="z", due_seconds_ago=-10)

    async with engine.connect() as connection:
        earliest, now = (await connection.execute(statement)).one()
    assert timedelta(seconds=90) < earliest - now <= timedelta(seconds=100)


@pytest.mark.parametrize(
    ("statements", "dialect"),
    [
        (PostgreSQLStatements(), make_url("postgresql://").get_dialect()()),
        (SQLiteStatements(), make_url("sqlite://").get_dialect()()),
    ],
    ids=["postgresql", "sqlite"],
)
def test_the_claim_sql_depends_only_on_the_number_of_queues(
    statements: JobStatements, dialect: Dialect
) -> None:
    def sql(statement: ClauseElement) -> str:
        return str(statement.compile(dialect=dialect))

    def claim_sql(queues: list[str], worker_id: str, limit: int) -> str:
        return sql(statements.claim_jobs(worker_id=worker_id, queues=queues, limit=limit))

    assert claim_sql(["a", "b"], "w1", 5) == claim_sql(["x", "y"], "w2", 7)
    assert claim_sql(["a"], "w1", 5) == claim_sql(["x"], "w2", 7)
    assert claim_sql(["a", "b"], "w1", 5) != claim_sql(["a", "b", "c"], "w1", 5)
    assert sql(statements.next_due(queues=["a", "b"])) == sql(
        statements.next_due(queues=["x", "y"])
    )
