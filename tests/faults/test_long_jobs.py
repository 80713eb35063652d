"""Long jobs under leases: a job running three heartbeat timeouts is never taken from a live worker.

Three worker processes share 20 jobs of three heartbeat timeouts each. One is SIGKILLed while
its jobs run: those are rescued once its lease falls silent and run again, once. One logs in as
a role whose CONNECTION LIMIT its own jobs use up (they open connections as that role and hold
them while they run): its lease, renewed over a connection opened at start, stays alive, so its
jobs are never rescued. Every other job runs exactly once; nothing is lost or dead-lettered.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, enqueue_many
from sqla_jobs.models import WorkerRecord
from tests.cli_tasks import ledger
from tests.faults.conftest import FaultDatabase, SpawnWorker
from tests.faults.long_tasks import HOG_URL_ENV_VAR, LongJob
from tests.faults.pg import PrivatePostgres
from tests.helpers import wait_until
from tests.processes import count_where, predicate

JOBS = 20
HEARTBEAT_TIMEOUT = 1.5
FAST_LEASES = {
    "SQLA_JOBS_HEARTBEAT_INTERVAL": "0.2",
    "SQLA_JOBS_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
}
# 3 x 7 slots for 20 jobs, each far longer than the claims take: every worker gets 6 or 7.
CONCURRENCY = 7
LIMITED_ROLE = "sqla_jobs_limited"
# The starved worker's lease, listener and pool take 3 or 4 of these; its jobs take the rest.
CONNECTION_LIMIT = 6


@pytest.fixture
async def limited_role(
    private_pg: PrivatePostgres, fault_db: FaultDatabase, fault_engine: AsyncEngine
) -> str:
    """Create `LIMITED_ROLE` (not a superuser: superusers ignore CONNECTION LIMIT); yield it."""
    private_pg.execute(
        "DO $$ BEGIN "
        f"CREATE ROLE {LIMITED_ROLE} LOGIN CONNECTION LIMIT {CONNECTION_LIMIT}; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    async with fault_engine.begin() as connection:
        await connection.execute(
            text(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                f"TO {LIMITED_ROLE}"
            )
        )
    return LIMITED_ROLE


async def runs_per_key(engine: AsyncEngine) -> dict[tuple[str, str, int], int]:
    """Count the ledger lines of each (key, event, pid)."""
    async with engine.connect() as connection:
        rows = await connection.execute(select(ledger.c.key, ledger.c.event, ledger.c.pid))
        return dict(Counter((key, event, pid) for key, event, pid in rows))


async def test_long_jobs_run_once_except_a_killed_workers_which_run_again_once(
    private_pg: PrivatePostgres,
    fault_db: FaultDatabase,
    fault_engine: AsyncEngine,
    spawn_worker: SpawnWorker,
    limited_role: str,
) -> None:
    limited_url = private_pg.url(fault_db.name, user=limited_role)
    options = ("--import", "tests.faults.long_tasks", "--concurrency", str(CONCURRENCY))
    plain = spawn_worker(*options, **FAST_LEASES)
    victim = spawn_worker(*options, **FAST_LEASES)
    starved = spawn_worker(
        *options,
        "--database-url",
        limited_url.render_as_string(hide_password=False),
        # asyncpg takes a libpq URL, without the SQLAlchemy driver name.
        **{HOG_URL_ENV_VAR: limited_url.set(drivername="postgresql").render_as_string(False)},
        **FAST_LEASES,
    )
    pids = {"plain": plain.process.pid, "victim": victim.process.pid}
    pids["starved"] = starved.process.pid
    # Enqueued once all three hold a lease, so the claims spread over all of them.
    await wait_until(predicate(fault_engine, equals=3, table=WorkerRecord), timeout=60)
    keys = [f"long-{n}" for n in range(JOBS)]
    async with AsyncSession(fault_engine) as session:
        tasks = (LongJob(key=key, seconds=3 * HEARTBEAT_TIMEOUT) for key in keys)
        for statement in enqueue_many(tasks):
            await session.execute(statement)
        await session.commit()

    # Every job is claimed and running: the victim is killed holding its share.
    await wait_until(predicate(fault_engine, ledger.c.event == "started", equals=JOBS), timeout=60)
    victim.kill()

    async def all_done() -> bool:
        finished = await count_where(fault_engine, ledger.c.event == "finished")
        return finished >= JOBS and await count_where(fault_engine, table=Job) == 0

    await wait_until(all_done, timeout=60, interval=0.1)
    # Never declared dead, never registered again under a successor id.
    starved_registration = await count_where(
        fault_engine,
        WorkerRecord.pid == pids["starved"],
        WorkerRecord.id.not_like("%~%"),
        table=WorkerRecord,
    )
    plain.signal(signal.SIGTERM)
    starved.signal(signal.SIGTERM)
    assert await plain.exit_code() == 0, plain.output
    assert await starved.exit_code() == 0, starved.output

    lines = await runs_per_key(fault_engine)

    def count(key: str, event: str, pid: int | None = None) -> int:
        return sum(
            n
            for (k, e, p), n in lines.items()
            if (k, e) == (key, event) and (pid is None or p == pid)
        )

    killed = {k for k in keys if count(k, "started", pids["victim"])} - {
        k for k in keys if count(k, "finished", pids["victim"])
    }
    assert killed, "the victim held no running job when it was killed"
    starts = {k: count(k, "started") for k in keys}
    finishes = {k: count(k, "finished") for k in keys}
    assert {k: n for k, n in starts.items() if n != (2 if k in killed else 1)} == {}
    assert {k: n for k, n in finishes.items() if n != 1} == {}
    assert all(count(k, "finished", pids["victim"]) == 0 for k in killed)
    assert await count_where(fault_engine, table=Job) == 0
    assert await count_where(fault_engine, table=DeadLetterJob) == 0

    starved_keys = {k for k in keys if count(k, "started", pids["starved"])}
    assert starved_keys, "the starved worker ran no job"
    first_runs = starved_keys - killed
    assert first_runs, "the starved worker ran only rescued jobs"
    # Its jobs used up its role's connections, its lease was renewed meanwhile, and none of
    # them was rescued from it (each started once, above).
    assert all(count(k, "exhausted", pids["starved"]) == 1 for k in starved_keys), starved.output
    assert all(count(k, "renewed", pids["starved"]) == 1 for k in starved_keys), starved.output
    assert starved_registration == 1
    assert "lease lost" not in starved.output
    print(f"long jobs: {len(killed)} run again after the kill, {len(starved_keys)} run starved")
