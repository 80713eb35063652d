"""Queues with slots of their own, and cluster-wide limits of running jobs per queue.

`Worker(queues={"mail": 5, "default": 20})` gives each queue its own slots, so a queue whose
jobs block never delays another's. `QueueLimit` rows (`admin.set_queue_limit`,
`Worker(queue_limits=...)`) cap a queue's running jobs across every worker: the claim obeys
them, race-free, on PostgreSQL (a lock on the limit row, then a count) and on SQLite (one
UPDATE under the write lock).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from sqla_jobs import ConfigurationError, Job, JobContext, Settings, Task, Worker, enqueue
from sqla_jobs.admin import remove_queue_limit, set_queue_limit
from sqla_jobs.dialects import statements_for
from sqla_jobs.models import QueueLimit
from sqla_jobs.store import JobStore
from sqla_jobs.worker.command import child_arguments, parse_arguments, settings_from
from sqla_jobs.worker_options import WorkerOptions
from tests.cli_tasks import Timed, ledger_metadata, spans
from tests.helpers import TestDatabase, wait_until
from tests.processes import WorkerProcess

finished: list[str] = []


@pytest.fixture(autouse=True)
def _clear_finished() -> None:
    finished.clear()


class Stuck(Task, name="tests.queue_limits.stuck", queue="stuck"):
    """Block until the test opens the gate (`ctx.state`)."""

    async def run(self, ctx: JobContext) -> None:
        await ctx.state.wait()
        finished.append("stuck")


class Quick(Task, name="tests.queue_limits.quick", queue="quick"):
    label: str

    async def run(self, ctx: JobContext) -> None:
        finished.append(self.label)


async def add(engine: AsyncEngine, *jobs: Job) -> None:
    async with AsyncSession(engine) as session:
        session.add_all(jobs)
        await session.commit()


async def held(engine: AsyncEngine, queue: str) -> int:
    async with AsyncSession(engine) as session:
        query = select(func.count()).where(Job.queue == queue, Job.locked_by.is_not(None))
        return (await session.scalar(query)) or 0


async def limit_of(engine: AsyncEngine, queue: str) -> int | None:
    async with AsyncSession(engine) as session:
        return await session.scalar(select(QueueLimit.max_running).where(QueueLimit.queue == queue))


# Per-queue slots.


async def test_a_queue_whose_jobs_block_never_delays_another_queues_jobs(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    gate = asyncio.Event()
    # The stuck queue's jobs are first by priority and age: in one shared pool they would take
    # every slot, and no quick job would start until they end.
    await add(engine, *(enqueue(Stuck(), priority=10) for _ in range(5)))
    await add(engine, *(enqueue(Quick(label=f"q{n}")) for n in range(6)))
    worker = Worker(
        database.url,
        tasks=[Stuck, Quick],
        queues={"stuck": 2, "quick": 1},
        state=gate,
        poll_interval=timedelta(milliseconds=50),
        handle_signals=False,
    )
    assert worker.concurrency == 3
    running = asyncio.create_task(worker.run())
    try:

        async def quick_ones_done() -> bool:
            return len([label for label in finished if label.startswith("q")]) == 6

        await wait_until(quick_ones_done, timeout=20)
        # Every quick job ran while both stuck slots were taken, and only those two.
        assert await held(engine, "stuck") == 2
        assert "stuck" not in finished
    finally:
        gate.set()
        worker.stop()
        await asyncio.wait_for(running, timeout=20)


async def test_a_claim_takes_at_most_each_queues_free_slots(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, *(enqueue(Quick(label="a"), queue="a", priority=5) for _ in range(4)))
    await add(engine, *(enqueue(Quick(label="b"), queue="b") for _ in range(4)))
    store = JobStore(engine)
    jobs = await store.claim(worker_id="w", queues=["a", "b"], limit=3, limits={"a": 1, "b": 2})
    assert sorted(job.queue for job in jobs) == ["a", "b", "b"]
    # The same cached statement, other values: the limits are parameters.
    jobs = await store.claim(worker_id="w", queues=["a", "b"], limit=2, limits={"a": 2, "b": 0})
    assert [job.queue for job in jobs] == ["a", "a"]
    assert len(store._claims) == 2  # one per list of queues claimed: (a, b) and (a,)


# Cluster-wide limits, enforced by the claim.


async def set_limit(engine: AsyncEngine, queue: str, max_running: int) -> None:
    async with AsyncSession(engine) as session:
        await session.execute(set_queue_limit(queue, max_running))
        await session.commit()


async def test_a_claim_never_takes_more_than_a_queues_limit_lets_run(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, *(enqueue(Quick(label="p"), queue="payments") for _ in range(6)))
    await add(engine, *(enqueue(Quick(label="o"), queue="other") for _ in range(3)))
    await set_limit(engine, "payments", 2)
    store = JobStore(engine)
    first = await store.claim(worker_id="w1", queues=["payments", "other"], limit=10)
    assert sorted(job.queue for job in first) == ["other"] * 3 + ["payments"] * 2
    # Another worker: the two running payments count, whoever holds them.
    assert await JobStore(engine).claim(worker_id="w2", queues=["payments"], limit=10) == []
    one = next(job for job in first if job.queue == "payments")
    assert await store.delete_jobs(worker_id="w1", job_ids=[one.id]) == 1
    again = await JobStore(engine).claim(worker_id="w2", queues=["payments"], limit=10)
    assert [job.queue for job in again] == ["payments"]
    # Raised: room for more at once; 0 pauses the queue.
    await set_limit(engine, "payments", 4)
    store._limited_read_at = None  # as if a second had passed
    assert len(await store.claim(worker_id="w1", queues=["payments"], limit=10)) == 2
    await set_limit(engine, "payments", 0)
    async with engine.begin() as connection:
        await connection.execute(update(Job).values(locked_by=None))
    assert await store.claim(worker_id="w1", queues=["payments"], limit=10) == []


async def test_a_stale_list_of_limited_queues_is_read_again_beside_the_claims(
    pg_database: TestDatabase,
) -> None:
    # PostgreSQL only: SQLite's one claim statement obeys the limits and keeps no list.
    engine = create_async_engine(pg_database.url)
    await add(engine, *(enqueue(Quick(label="p"), queue="payments") for _ in range(4)))
    store = JobStore(engine)
    assert await store.claim(worker_id="w", queues=["other"], limit=10) == []
    await set_limit(engine, "payments", 1)
    assert store._limited_read_at is not None
    store._limited_read_at -= 3600  # read an hour ago: stale
    # This claim goes by the stale list (no limits), which the claim itself corrects: the
    # unlimited claim leaves the limited queue out. The list is read again meanwhile.
    assert await store.claim(worker_id="w", queues=["payments"], limit=10) == []
    assert store._limited_refresh is not None

    async def refreshed() -> bool:
        return store._limited_refresh is None

    await wait_until(refreshed)
    assert store._limited == frozenset({"payments"})
    assert len(await store.claim(worker_id="w", queues=["payments"], limit=10)) == 1
    assert await store.claim(worker_id="w", queues=["payments"], limit=10) == []
    await store.dispose()  # and with it the engine


async def test_a_removed_limit_lets_the_queue_run_freely(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, *(enqueue(Quick(label="p"), queue="payments") for _ in range(5)))
    await set_limit(engine, "payments", 1)
    store = JobStore(engine)
    assert len(await store.claim(worker_id="w", queues=["payments"], limit=10)) == 1
    async with AsyncSession(engine) as session:
        removed = await session.execute(remove_queue_limit("payments"))
        assert removed.rowcount == 1  # type: ignore[attr-defined]  # a CursorResult
        await session.commit()
    # The store still believes the queue is limited: its claim finds no limit row and goes on.
    assert len(await store.claim(worker_id="w", queues=["payments"], limit=10)) == 4


async def test_the_unlimited_claim_leaves_out_a_queue_with_a_limit(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    """A worker that has not yet read a new limit cannot overrun it (SQLite: it obeys it)."""
    await add(engine, *(enqueue(Quick(label="p"), queue="payments") for _ in range(5)))
    await set_limit(engine, "payments", 2)
    claim = statements_for(database.dialect).claim_jobs(
        worker_id="stale", queues=["payments"], limit=10
    )
    async with engine.begin() as connection:
        claimed = len((await connection.execute(claim)).all())
    assert claimed == (0 if database.dialect == "postgresql" else 2)


async def test_concurrent_claims_of_many_workers_never_exceed_the_limit(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, *(enqueue(Quick(label="p"), queue="payments") for _ in range(40)))
    await set_limit(engine, "payments", 3)
    engines = [create_async_engine(database.url) for _ in range(8)]
    try:
        stores = [JobStore(e) for e in engines]

        async def claim(n: int) -> int:
            jobs = await stores[n].claim(worker_id=f"w{n}", queues=["payments"], limit=5)
            return len(jobs)

        for _ in range(3):
            counts = await asyncio.gather(*(claim(n) for n in range(8)))
            assert sum(counts) <= 3
        assert await held(engine, "payments") == 3
    finally:
        for e in engines:
            await e.dispose()


async def test_a_worker_stores_its_queue_limits_when_it_starts(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await set_limit(engine, "payments", 7)
    worker = Worker(
        database.url,
        tasks=[Quick],
        queue_limits={"payments": 2, "quick": 5},
        handle_signals=False,
    )
    assert await worker.run_until_idle() == 0
    assert await limit_of(engine, "payments") == 2
    assert await limit_of(engine, "quick") == 5


async def test_set_queue_limit_replaces_the_previous_limit(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await set_limit(engine, "payments", 2)
    await set_limit(engine, "payments", 3)
    assert await limit_of(engine, "payments") == 3
    async with AsyncSession(engine) as session:
        removed = await session.execute(remove_queue_limit("payments"))
        assert removed.rowcount == 1  # type: ignore[attr-defined]  # a CursorResult
        removed = await session.execute(remove_queue_limit("payments"))
        assert removed.rowcount == 0  # type: ignore[attr-defined]  # a CursorResult
        await session.commit()
    assert await limit_of(engine, "payments") is None


@pytest.mark.parametrize(
    ("queue", "max_running", "message"),
    [
        ("", 2, "non-empty"),
        ("pay ments", 2, "whitespace"),
        ("payments", -1, ">= 0"),
        ("payments", True, ">= 0"),
        ("payments", 2**31, "at most"),
    ],
)
def test_set_queue_limit_refuses_bad_values(queue: str, max_running: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        set_queue_limit(queue, max_running)


# Options: one definition for Worker, Settings and the CLI.


def test_queues_with_numbers_get_slots_of_their_own() -> None:
    options = WorkerOptions.checked(queues="mail=5, default=20")
    assert options.queue_names == ("mail", "default")
    assert options.queue_concurrency == {"mail": 5, "default": 20}
    assert options.total_concurrency == 25
    shared = WorkerOptions.checked(queues="mail,default", concurrency=7)
    assert shared.queue_names == ("mail", "default")
    assert shared.queue_concurrency is None
    assert shared.total_concurrency == 7
    assert WorkerOptions.checked(queues={"mail": 5}).queue_concurrency == {"mail": 5}


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ("mail=5,default", "every queue its number of slots, or none"),
        ("=5", "queues: queue must be a non-empty string"),
        ("mail=five", "queue 'mail': its number of slots must be a whole number, not 'five'"),
        ("mail=0", "queue 'mail': its number of slots must be between 1 and 10000, not 0"),
        ("mail=6000,other=6000", "add up to more than 10000"),
        ("mail=1,mail=2", "queue 'mail' is named twice"),
        ({"mail\n": 5}, "no whitespace or control characters"),
        (["mail", ""], "non-empty"),
        ("x" * 256, "at most 255 characters"),
    ],
)
def test_bad_queues_are_refused_with_a_clear_error(queues: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        WorkerOptions.checked(queues=queues)


def test_bad_queue_limits_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="queue_limits: 'payments' has no number"):
        WorkerOptions.checked(queue_limits="payments")
    with pytest.raises(ConfigurationError, match="its limit must be between 0 and"):
        WorkerOptions.checked(queue_limits={"payments": -1})
    assert WorkerOptions.checked(queue_limits="payments=0").queue_limits == {"payments": 0}


def test_settings_read_per_queue_slots_and_limits_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SQLA_JOBS_QUEUES", "mail=5,default=20")
    monkeypatch.setenv("SQLA_JOBS_QUEUE_LIMITS", "payments=2")
    settings = Settings()
    options = settings.worker_options()
    assert options.queue_concurrency == {"mail": 5, "default": 20}
    assert options.queue_limits == {"payments": 2}
    worker = Worker.from_settings(settings, tasks=[Quick])
    assert worker.queues == ("mail", "default")
    assert worker.concurrency == 25
    assert worker.options.queue_limits == {"payments": 2}


def test_worker_refuses_a_bad_queue_name() -> None:
    with pytest.raises(ConfigurationError, match="queues: queue must contain no whitespace"):
        Worker("sqlite+aiosqlite:///unused.db", tasks=[Quick], queues={"ma il": 2})


# Real worker processes, measured through a ledger of when each job's code ran.


@pytest.fixture
async def ledger_engine(database: TestDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database.url)
    async with engine.begin() as connection:
        await connection.run_sync(ledger_metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


def most_at_once(intervals: Sequence[tuple[float, float]]) -> int:
    """Return the most intervals that overlap at one instant (an end before a start at a tie)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_most_at_once_counts_overlaps() -> None:
    assert most_at_once([(0, 2), (1, 3), (2, 4)]) == 2
    assert most_at_once([(0, 5), (1, 2), (1.5, 3)]) == 3


async def test_four_processes_never_run_more_than_the_limit_at_once(
    database: TestDatabase,
    ledger_engine: AsyncEngine,
    processes: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    jobs = 16
    await add(ledger_engine, *(enqueue(Timed(key=str(n), seconds=0.25)) for n in range(jobs)))
    for n in range(4):
        log_path = tmp_path / f"worker-{n}.log"
        # Each could run 4 payments at once: 16 in all, without the limit.
        processes.append(
            WorkerProcess(
                database.url,
                log_path,
                "--queues",
                "payments",
                "--concurrency",
                "4",
                SQLA_JOBS_QUEUE_LIMITS="payments=2",
            )
        )

    async def all_ran() -> bool:
        async with AsyncSession(ledger_engine) as session:
            return (await session.scalar(select(func.count()).select_from(spans))) == jobs

    await wait_until(all_ran, timeout=120, interval=0.2)
    for worker in processes:
        worker.signal(signal.SIGTERM)
    assert [await worker.exit_code() for worker in processes] == [0, 0, 0, 0]
    async with AsyncSession(ledger_engine) as session:
        rows = (await session.execute(select(spans.c.started_at, spans.c.finished_at))).all()
    assert most_at_once([(start, end) for start, end in rows]) == 2


def test_the_command_reads_per_queue_slots_and_limits_and_passes_them_to_its_children() -> None:
    args = parse_arguments(["--queues", "mail=5,default=20", "--queue-limits", "payments=2"])
    settings = settings_from(args)
    assert settings.worker_options().queue_concurrency == {"mail": 5, "default": 20}
    assert settings.queue_limits == {"payments": 2}
    children = child_arguments(args)
    assert children[children.index("--queues") + 1] == "mail=5,default=20"
    assert children[children.index("--queue-limits") + 1] == "payments=2"
    with pytest.raises(ConfigurationError, match="queues: queue must be a non-empty string"):
        settings_from(parse_arguments(["--queues", "mail=5,=3"]))


async def test_preparing_claims_reads_the_limited_queues_ahead_of_the_first_claim(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await set_limit(engine, "payments", 2)
    store = JobStore(engine)
    await store.prepare_claims(["payments", "other"])
    if database.dialect == "postgresql":
        # Read now, so the first claim neither waits for this read nor for a connect.
        assert store._limited == frozenset({"payments"})
        assert store._limited_read_at is not None
        assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]


async def test_preparing_claims_with_the_database_away_leaves_it_to_the_first_claim() -> None:
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:9/nowhere")
    try:
        await asyncio.wait_for(JobStore(engine).prepare_claims(["default"]), timeout=30)
    finally:
        await engine.dispose()
