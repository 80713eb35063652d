"""Measure sqla_jobs against a raw asyncpg baseline on the same PostgreSQL, in the same run.

    python benchmarks/bench.py            # defaults; a few minutes
    python benchmarks/bench.py --quick    # small sizes, a smoke check (< 90 s)
    python benchmarks/bench.py --peers none   # without PgQueuer and procrastinate

Creates a scratch database ``sqla_jobs_bench_<hex>`` next to ``$SQLA_JOBS_DATABASE_URL`` (an
admin URL: its user creates and drops databases), migrates it, runs the scenarios and drops it;
each peer gets a fresh database of its own the same way (peers.py). See benchmarks/README.md
for what each line means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import sqlalchemy
from sqlalchemy import Insert, Integer, Interval, String, func, insert, literal, select, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_tasks, also run from elsewhere

import bench_tasks
import peers
from bench_models import BenchBase, BenchOrder, BenchRow, bench_row
from bench_tasks import NoOp, Stamp
from harness import (
    BENCH_DIR,
    child_environment,
    fresh_database,
    libpq_dsn,
    line_count,
    paced,
    percentile,
    start_process,
    timed,
    wait_for,
)

from sqla_jobs import Worker, enqueue, enqueue_bulk
from sqla_jobs.engine import create_engine
from sqla_jobs.enqueue import enqueue_many
from sqla_jobs.models import Job
from sqla_jobs.urls import display_url, to_async_url, to_sync_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RAW_CONNECTIONS = 4
RAW_CHANNEL = "bench_raw"

RAW_SCHEMA = (
    "CREATE TABLE bench_raw ("
    " id bigserial PRIMARY KEY, payload jsonb NOT NULL, priority int NOT NULL DEFAULT 0,"
    " created_at timestamptz NOT NULL DEFAULT now(), locked_by text)",
    # Without it every raw claim would sort the whole table: the baseline gets the index a real
    # queue has, like sqla_jobs' own claim index.
    "CREATE INDEX bench_raw_claim ON bench_raw (priority DESC, created_at)",
)
RAW_INSERT_ONE = "INSERT INTO bench_raw (payload, priority) VALUES ($1::jsonb, $2)"
RAW_INSERT_MANY = (
    "INSERT INTO bench_raw (payload, priority) SELECT * FROM unnest($1::jsonb[], $2::int[])"
)
RAW_CLAIM = (
    "DELETE FROM bench_raw WHERE id IN ("
    " SELECT id FROM bench_raw ORDER BY priority DESC, created_at LIMIT $1"
    " FOR UPDATE SKIP LOCKED"
    ") RETURNING id, payload"
)


@dataclass(frozen=True)
class Sizes:
    """How many jobs each scenario uses."""

    enqueue: int
    bulk: int
    drain: int
    drain_rounds: int
    """Each drain (sqla_jobs, raw, peers alike) runs this many times; the best counts."""
    concurrencies: tuple[int, ...]
    latency_jobs: int
    rss_backlog: int
    backlog: int
    """Jobs not due beside the due ones of scenario 6 (b) and (c)."""


DEFAULT_SIZES = Sizes(
    enqueue=2_000,
    bulk=10_000,
    drain=10_000,
    drain_rounds=3,
    concurrencies=(1, 16, 100),
    latency_jobs=200,
    rss_backlog=1_000_000,
    backlog=1_000_000,
)
QUICK_SIZES = Sizes(
    enqueue=200,
    bulk=1_000,
    drain=500,
    drain_rounds=1,
    concurrencies=(1, 16, 100),
    latency_jobs=20,
    rss_backlog=2_000,
    backlog=20_000,
)


@dataclass(frozen=True)
class Row:
    """One line of the result table: a sqla_jobs figure beside its baseline (mostly raw asyncpg).

    `key` marks the rows the comparison with the peers and the targets read (`figures_from`).
    """

    scenario: str
    unit: str
    sqla_jobs: float
    baseline: str
    raw: float
    higher_is_better: bool
    key: str = ""

    @property
    def ratio(self) -> float:
        """sqla_jobs / baseline: the issue's targets (">= 0.3x raw") read off this directly."""
        return self.sqla_jobs / self.raw if self.raw else float("inf")


# --- the scratch database ---------------------------------------------------------------------


@dataclass(frozen=True)
class ScratchDatabase:
    """The benchmark's own database: its SQLAlchemy async URL and its asyncpg DSN."""

    url: str
    dsn: str


@contextmanager
def scratch_database(admin_url: URL) -> Iterator[ScratchDatabase]:
    """Create, migrate and finally drop a database of this run's own."""
    with fresh_database(admin_url, "sqla_jobs_bench") as url:
        _migrate(url)
        db = ScratchDatabase(
            url=to_async_url(url).render_as_string(hide_password=False), dsn=libpq_dsn(url)
        )
        asyncio.run(_create_raw_table(db))
        engine = create_sync_engine(to_sync_url(url))
        BenchBase.metadata.create_all(engine)  # scenario 7's plain tables
        engine.dispose()
        yield db


def _migrate(url: URL) -> None:
    try:
        from sqla_jobs import migrate
    except ImportError:
        from sqla_jobs.models import Base

        engine = create_sync_engine(to_sync_url(url))
        Base.metadata.create_all(engine)
        engine.dispose()
    else:
        migrate.upgrade(url)


async def _create_raw_table(db: ScratchDatabase) -> None:
    connection = await asyncpg.connect(db.dsn)
    try:
        for statement in RAW_SCHEMA:
            await connection.execute(statement)
    finally:
        await connection.close()


async def reset(db: ScratchDatabase) -> None:
    """Empty the benchmark's tables and refresh planner statistics, so scenarios do not leak."""
    connection = await asyncpg.connect(db.dsn)
    try:
        tables = (Job.__tablename__, "bench_raw", BenchRow.__tablename__, BenchOrder.__tablename__)
        await connection.execute(f"TRUNCATE {', '.join(tables)}")
        for table in tables:
            await connection.execute(f"VACUUM ANALYZE {table}")
    finally:
        await connection.close()


async def count_jobs(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(Job))).scalar_one())


async def raw_count(db: ScratchDatabase) -> int:
    connection = await asyncpg.connect(db.dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM bench_raw"))
    finally:
        await connection.close()


# --- 1. enqueue, one commit per job -----------------------------------------------------------


async def bench_enqueue_per_commit(db: ScratchDatabase, n: int) -> list[Row]:
    await reset(db)
    engine = create_engine(db.url)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    tasks = [NoOp(n=i) for i in range(n)]

    async def enqueue_each() -> None:
        for task in tasks:
            async with sessionmaker() as session:
                session.add(enqueue(task))
                await session.commit()

    try:
        await _warm_up_sqla(sessionmaker)
        seconds = await timed(enqueue_each)
    finally:
        await engine.dispose()

    connection = await asyncpg.connect(db.dsn)
    payloads = [{"n": i} for i in range(n)]

    async def insert_each_in_a_transaction() -> None:
        # What an application's own transaction costs: BEGIN, INSERT, COMMIT.
        for payload in payloads:
            async with connection.transaction():
                await connection.execute(RAW_INSERT_ONE, json.dumps(payload), 0)

    async def insert_each_autocommit() -> None:
        # Each statement its own transaction: one round trip, the floor of any driver.
        for payload in payloads:
            await connection.execute(RAW_INSERT_ONE, json.dumps(payload), 0)

    try:
        await connection.execute(RAW_INSERT_ONE, "{}", 0)  # prepare the statement
        raw_seconds = await timed(insert_each_in_a_transaction)
        autocommit_seconds = await timed(insert_each_autocommit)
    finally:
        await connection.close()
    name = f"1. enqueue {n}, one commit each (ORM AsyncSession)"
    return [
        Row(name, "jobs/s", n / seconds, "raw BEGIN/INSERT/COMMIT per row", n / raw_seconds, True),
        Row(
            name,
            "jobs/s",
            n / seconds,
            "raw INSERT per row, autocommit",
            n / autocommit_seconds,
            True,
        ),
    ]


async def _warm_up_sqla(sessionmaker: async_sessionmaker[Any]) -> None:
    """Open the pool's connection and compile the insert before timing; roll it back."""
    async with sessionmaker() as session:
        session.add(enqueue(NoOp()))
        await session.flush()
        await session.rollback()


# --- 2. bulk enqueue in one transaction -------------------------------------------------------


async def bench_enqueue_many(db: ScratchDatabase, n: int, rounds: int) -> list[Row]:
    """`enqueue_bulk()` (COPY) and `enqueue_many()` (INSERTs), each `n` jobs in one committed
    AsyncSession transaction, beside one raw ``INSERT ... SELECT unnest`` of `n` rows.

    Each is timed `rounds` times, alternated, on an emptied table; the best round counts (one
    insert of 10 000 rows takes about 0.1 s, within this VM's noise), as for the peers."""
    await reset(db)
    engine = create_engine(db.url)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    tasks = [NoOp(n=i) for i in range(n)]

    async def insert_in_chunks() -> None:
        async with sessionmaker() as session:
            for statement in enqueue_many(tasks):
                await session.execute(statement)
            await session.commit()

    async def copy_in_the_session() -> None:
        async with sessionmaker() as session:
            await enqueue_bulk(session, tasks)
            await session.commit()

    try:
        # Warm up both ways alike: open the pool's connection, compile and prepare; roll back.
        async with sessionmaker() as session:
            for statement in enqueue_many(tasks[:10]):
                await session.execute(statement)
            await enqueue_bulk(session, tasks[:10])
            await session.rollback()
        seconds = {"many": math.inf, "bulk": math.inf, "raw": math.inf}
        for _ in range(rounds):
            for form, insert_jobs in (("many", insert_in_chunks), ("bulk", copy_in_the_session)):
                seconds[form] = min(seconds[form], await timed(insert_jobs))
                assert await count_jobs(engine) == n, form
                await reset(db)  # the next form starts on an empty, vacuumed table too
            seconds["raw"] = min(seconds["raw"], await _raw_insert_seconds(db, n))
            await reset(db)
    finally:
        await engine.dispose()
    baseline = "raw INSERT ... SELECT unnest($1)"
    return [
        Row(
            f"2. enqueue_bulk {n} (COPY), one transaction",
            "jobs/s",
            n / seconds["bulk"],
            baseline,
            n / seconds["raw"],
            higher_is_better=True,
            key="bulk",
        ),
        Row(
            f"2. enqueue_many {n}, one transaction",
            "jobs/s",
            n / seconds["many"],
            baseline,
            n / seconds["raw"],
            higher_is_better=True,
            key="bulk_many",
        ),
    ]


async def _raw_insert_seconds(db: ScratchDatabase, n: int) -> float:
    """Seconds of one raw ``INSERT ... SELECT unnest`` of `n` rows in a transaction."""

    connection = await asyncpg.connect(db.dsn)
    payloads = [{"n": i} for i in range(n)]

    async def insert_unnest() -> None:
        async with connection.transaction():
            await connection.execute(
                RAW_INSERT_MANY, [json.dumps(p) for p in payloads], [0] * len(payloads)
            )

    try:
        raw_seconds = await timed(insert_unnest)
    finally:
        await connection.close()
    assert await raw_count(db) == n
    return raw_seconds


# --- 3. drain -------------------------------------------------------------------------------


async def fill_jobs(db: ScratchDatabase, n: int, queue: str | None = None) -> None:
    """Insert `n` NoOp jobs with `enqueue_many`, committed."""
    engine = create_engine(db.url)
    try:
        sessionmaker = async_sessionmaker(engine)
        async with sessionmaker() as session:
            for statement in enqueue_many((NoOp(n=i) for i in range(n)), queue=queue):
                await session.execute(statement)
            await session.commit()
    finally:
        await engine.dispose()


async def fill_raw(db: ScratchDatabase, n: int) -> None:
    connection = await asyncpg.connect(db.dsn)
    try:
        payloads = [json.dumps({"n": i}) for i in range(n)]
        await connection.execute(RAW_INSERT_MANY, payloads, [0] * n)
    finally:
        await connection.close()


async def raw_drain(dsn: str, batch: int, connections: int = RAW_CONNECTIONS) -> int:
    """Claim-and-delete until the raw table is empty, on `connections` connections at once."""

    async def drain_one(connection: asyncpg.Connection) -> int:
        done = 0
        while rows := await connection.fetch(RAW_CLAIM, batch):
            for row in rows:
                json.loads(row["payload"])  # what a job runner does with a payload, at least
            done += len(rows)
        return done

    pool = [await asyncpg.connect(dsn) for _ in range(connections)]
    try:
        return sum(await asyncio.gather(*(drain_one(c) for c in pool)))
    finally:
        for connection in pool:
            await connection.close()


async def bench_drain(
    db: ScratchDatabase, n: int, concurrencies: Sequence[int], rounds: int
) -> list[Row]:
    """Drain `n` no-ops at each concurrency, and raw at batch 1 and 100, `rounds` times in
    turn; the best round of each counts (a 2-core VM's speed drifts by a third within
    minutes, and a drain of 10 000 lasts under a second)."""
    raw: dict[int, float] = {}
    sqla: dict[int, float] = {}
    for _ in range(rounds):
        for batch in (1, 100):
            raw[batch] = max(raw.get(batch, 0.0), await _raw_drain_rate(db, n, batch))
        for concurrency in concurrencies:
            await reset(db)
            rate = await _worker_drain_rate(db, n, concurrency=concurrency)
            sqla[concurrency] = max(sqla.get(concurrency, 0.0), rate)
    return [
        Row(
            f"3. drain {n} no-ops, Worker concurrency={concurrency}",
            "jobs/s",
            sqla[concurrency],
            f"raw claim+delete, {RAW_CONNECTIONS} conns, batch {batch}",
            raw[batch],
            higher_is_better=True,
            key="drain",
        )
        for concurrency in concurrencies
        for batch in [1 if concurrency == 1 else 100]
    ]


async def _raw_drain_rate(db: ScratchDatabase, n: int, batch: int) -> float:
    await reset(db)
    await fill_raw(db, n)
    drained = 0

    async def drain() -> None:
        nonlocal drained
        drained = await raw_drain(db.dsn, batch)

    seconds = await timed(drain)
    assert drained == n, (drained, n)
    return n / seconds


async def _worker_drain_rate(
    db: ScratchDatabase,
    n: int,
    *,
    concurrency: int = 100,
    queues: Sequence[str] = (bench_tasks.BENCH_QUEUE,),
) -> float:
    """Enqueue `n` no-ops spread over `queues`, drain them with one in-process Worker; jobs/s."""
    for index, queue in enumerate(queues):
        await fill_jobs(db, len(range(index, n, len(queues))), queue=queue)
    worker = Worker(
        db.url, tasks=[NoOp], queues=queues, concurrency=concurrency, handle_signals=False
    )
    processed = 0

    async def run() -> None:
        nonlocal processed
        processed = await worker.run_until_idle()

    seconds = await timed(run)
    assert processed == n, (queues, processed, n)
    return n / seconds


def bench_drain_processes(db: ScratchDatabase, n: int, processes: int) -> list[Row]:
    """Drain `n` no-ops with ``python -m sqla_jobs.worker --processes N`` (concurrency 100 each).

    The workers start idle; the clock runs from the commit of the backlog (one transaction,
    so they all see it at once) until the table is empty. The baseline drains the same backlog
    on ``processes * RAW_CONNECTIONS`` raw connections.
    """
    asyncio.run(reset(db))
    supervisor, log = _start_worker_process(
        db,
        [
            "--queues",
            bench_tasks.BENCH_QUEUE,
            "--processes",
            str(processes),
            "--concurrency",
            "100",
        ],
    )
    try:
        asyncio.run(_wait_for_async(lambda: log.read_text().count("worker started") >= processes))
        seconds = asyncio.run(_fill_and_time_drain(db, n))
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
        log.unlink(missing_ok=True)

    async def raw() -> float:
        await fill_raw(db, n)
        return await timed(lambda: raw_drain(db.dsn, 100, processes * RAW_CONNECTIONS))

    raw_seconds = asyncio.run(raw())
    return [
        Row(
            f"3. scale-out: drain {n}, --processes {processes} x concurrency 100",
            "jobs/s",
            n / seconds,
            f"raw claim+delete, {processes * RAW_CONNECTIONS} conns, batch 100",
            n / raw_seconds,
            higher_is_better=True,
            key=f"processes={processes}",
        )
    ]


async def _wait_for_async(predicate: Callable[[], bool], timeout: float = 60) -> None:
    await wait_for(predicate, timeout)


async def _fill_and_time_drain(db: ScratchDatabase, n: int) -> float:
    engine = create_engine(db.url)
    try:
        async with async_sessionmaker(engine)() as session:
            for statement in enqueue_many(NoOp(n=i) for i in range(n)):
                await session.execute(statement)
            await session.commit()
        started = time.perf_counter()
        while await count_jobs(engine):
            await asyncio.sleep(0.01)
        return time.perf_counter() - started
    finally:
        await engine.dispose()


# --- 4. enqueue-to-start latency ----------------------------------------------------------


async def bench_latency(
    db: ScratchDatabase, n: int, interval: float, poll_interval: float
) -> list[Row]:
    """Time jobs from enqueue to start on an idle worker in its own process, as in production.

    Two clocks per job: from just before the ORM enqueue (`enqueue` + commit included) and from
    the moment the commit returned. Both sides read ``time.time_ns()`` of one machine.
    """
    await reset(db)
    timeout = n * interval + 10 * poll_interval + 30
    stamps = BENCH_DIR / f".stamps-{uuid.uuid4().hex[:8]}"
    engine = create_engine(db.url)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    before_ns: dict[int, int] = {}
    committed_ns: dict[int, int] = {}

    async def enqueue_stamp(i: int) -> None:
        before_ns[i] = time.time_ns()
        async with sessionmaker() as session:
            session.add(enqueue(Stamp(key=i)))
            await session.commit()
        committed_ns[i] = time.time_ns()

    worker, log = _start_worker_process(
        db,
        ["--queues", bench_tasks.LATENCY_QUEUE],
        SQLA_JOBS_POLL_INTERVAL=str(poll_interval),
        BENCH_STAMP_FILE=str(stamps),
    )
    try:
        await _warm_up_sqla(sessionmaker)
        await wait_for(lambda: "worker started" in log.read_text(), 30)
        # Started: its listener connects within milliseconds; no per-job DEBUG lines needed.
        await asyncio.sleep(0.5)
        await paced(n, interval, enqueue_stamp)
        await wait_for(lambda: line_count(stamps) >= n, timeout)
        started = dict(map(int, line.split()) for line in stamps.read_text().splitlines())
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        await engine.dispose()
        stamps.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
    from_enqueue = [(started[i] - before_ns[i]) / 1e6 for i in range(n)]
    from_commit = [(started[i] - committed_ns[i]) / 1e6 for i in range(n)]

    raw_from_start, raw_from_commit = await _raw_latency(db, n, interval, poll_interval, timeout)
    label = f"({n} jobs, {interval * 1000:.0f} ms apart, poll {poll_interval:g} s)"
    return [
        Row(
            f"4. {clock} p{q} {label}",
            "ms",
            percentile(ours, q),
            baseline,
            percentile(raw, q),
            higher_is_better=False,
            key=f"p{q}" if clock == "enqueue-to-start" else "",
        )
        for clock, ours, raw, baseline in (
            ("commit-to-start", from_commit, raw_from_commit, "raw LISTEN/NOTIFY + claim"),
            ("enqueue-to-start", from_enqueue, raw_from_start, "raw INSERT+NOTIFY, claim"),
        )
        for q in (50, 95, 99)
    ]


def _start_worker_process(
    db: ScratchDatabase, arguments: Sequence[str], **env: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``python -m sqla_jobs.worker`` on `db`; its log goes to a file (pipes can fill up)."""
    return start_process(
        ["-m", "sqla_jobs.worker", "--import", "bench_tasks", *arguments],
        **env,
        SQLA_JOBS_DATABASE_URL=db.url,
    )


async def _raw_latency(
    db: ScratchDatabase, n: int, interval: float, poll_interval: float, timeout: float
) -> tuple[list[float], list[float]]:
    """What LISTEN/NOTIFY gives: insert + NOTIFY in one transaction, a listener claims at once.

    Returns the latencies from just before the insert and from the commit's return, in ms.
    """
    started_ns: dict[int, int] = {}
    before_ns: dict[int, int] = {}
    committed_ns: dict[int, int] = {}
    wakeup = asyncio.Event()
    stopping = asyncio.Event()
    listener = await asyncpg.connect(db.dsn)
    claimer = await asyncpg.connect(db.dsn)
    producer = await asyncpg.connect(db.dsn)

    async def consume() -> None:
        while not stopping.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), poll_interval)
            wakeup.clear()
            while rows := await claimer.fetch(RAW_CLAIM, 100):
                now = time.time_ns()
                for row in rows:
                    started_ns[json.loads(row["payload"])["key"]] = now

    async def produce(i: int) -> None:
        before_ns[i] = time.time_ns()
        async with producer.transaction():
            await producer.execute(RAW_INSERT_ONE, json.dumps({"key": i}), 0)
            await producer.execute("SELECT pg_notify($1, '')", RAW_CHANNEL)
        committed_ns[i] = time.time_ns()

    await listener.add_listener(RAW_CHANNEL, lambda *_: wakeup.set())
    consuming = asyncio.create_task(consume())
    try:
        await asyncio.sleep(0.5)
        await paced(n, interval, produce)
        await wait_for(lambda: len(started_ns) >= n, timeout)
    finally:
        stopping.set()
        wakeup.set()
        await consuming
        for connection in (listener, claimer, producer):
            await connection.close()
    return (
        [(started_ns[i] - before_ns[i]) / 1e6 for i in range(n)],
        [(started_ns[i] - committed_ns[i]) / 1e6 for i in range(n)],
    )


# --- 5. worker peak RSS ---------------------------------------------------------------------


def bench_rss(db: ScratchDatabase, backlog: int, concurrency: int) -> list[Row]:
    """Drain a backlog in a child process each, and read the child's peak RSS (VmHWM)."""
    asyncio.run(reset(db))
    asyncio.run(insert_backlog(db, backlog, run_in=timedelta(0)))
    sqla = _run_child(["drain", db.url, str(concurrency)])
    assert sqla["jobs"] == backlog, sqla
    asyncio.run(fill_raw(db, backlog))
    raw = _run_child(["raw-drain", db.dsn, "100"])
    assert raw["jobs"] == backlog, raw
    baseline = f"raw drain child, {RAW_CONNECTIONS} conns, batch 100"
    return [
        Row(
            f"5. worker peak RSS, draining {backlog}, concurrency={concurrency}",
            "MiB",
            sqla["vmhwm_kib"] / 1024,
            baseline,
            raw["vmhwm_kib"] / 1024,
            higher_is_better=False,
            key="rss",
        ),
        Row(
            "5. (same run) RSS growth over the idle child at start",
            "MiB",
            (sqla["vmhwm_kib"] - sqla["vmrss_start_kib"]) / 1024,
            baseline,
            max(raw["vmhwm_kib"] - raw["vmrss_start_kib"], 1) / 1024,
            higher_is_better=False,
        ),
        Row(
            f"5. (same run) drain throughput of {backlog}",
            "jobs/s",
            backlog / sqla["seconds"],
            baseline,
            backlog / raw["seconds"],
            higher_is_better=True,
        ),
    ]


def _run_child(arguments: list[str]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *arguments],
        env=child_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child_main(kind: str, target: str, amount: str) -> int:
    """Run one drain in this (child) process and print its figures as a JSON line."""
    start_rss = _proc_status_kib("VmRSS")
    started = time.perf_counter()
    if kind == "drain":
        worker = Worker(target, tasks=[NoOp], concurrency=int(amount), handle_signals=False)
        jobs = asyncio.run(worker.run_until_idle())
    elif kind == "raw-drain":
        jobs = asyncio.run(raw_drain(target, int(amount)))
    else:
        raise SystemExit(f"unknown child {kind!r}")
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "jobs": jobs,
                "seconds": seconds,
                "vmrss_start_kib": start_rss,
                "vmhwm_kib": _proc_status_kib("VmHWM"),
            }
        )
    )
    return 0


# --- 6. drain beside a backlog that is not due ------------------------------------------------

BACKLOG_QUEUES = (bench_tasks.BENCH_QUEUE, "bench_b", "bench_c")


def backlog_insert(n: int, *, run_in: timedelta, retrying: bool = False) -> Insert:
    """One INSERT ... SELECT over generate_series: `n` NoOp jobs due `run_in` from now.

    With `retrying`, they look like jobs in retry backoff (one failed attempt behind them).
    """
    i = func.generate_series(1, n).column_valued("i")
    values: dict[str, Any] = {
        "id": func.gen_random_uuid(),
        "name": literal(NoOp.__task_options__.name, String),
        "payload": func.jsonb_build_object("n", i),
        "queue": literal(bench_tasks.BENCH_QUEUE, String),
        "run_at": func.now() + literal(run_in, Interval),
    }
    if retrying:
        values |= {
            "error_count": literal(1, Integer),
            "last_error_message": literal("bench: failed once", String),
            "last_failed_at": func.now(),
        }
    return insert(Job).from_select(list(values), select(*values.values()))


async def insert_backlog(
    db: ScratchDatabase, n: int, *, run_in: timedelta, retrying: bool = False
) -> None:
    """Insert `n` jobs in one statement, then ANALYZE, as after any bulk load."""
    engine = create_engine(db.url)
    try:
        async with engine.begin() as connection:
            await connection.execute(backlog_insert(n, run_in=run_in, retrying=retrying))
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(f"ANALYZE {Job.__tablename__}"))
    finally:
        await engine.dispose()


async def bench_backlog(db: ScratchDatabase, due: int, backlog: int, rounds: int) -> list[Row]:
    """Drain `due` jobs at concurrency 100: alone, beside `backlog` future or retrying jobs,
    and spread over three queues. Each line's baseline is (a), the drain alone. Each case's
    drain runs `rounds` times beside the same backlog, and its best round counts."""
    cases = (
        ("a", "empty table otherwise", None, False),
        ("b", f"+ {backlog:,} scheduled 1 h ahead", timedelta(hours=1), False),
        ("c", f"+ {backlog:,} in retry backoff", timedelta(hours=1), True),
        ("d", f"spread over {len(BACKLOG_QUEUES)} queues, one worker", None, False),
    )
    rates: dict[str, float] = {}
    await fill_jobs(db, 100)  # warm up: the first drain of a process pays for compiling
    await Worker(db.url, tasks=[NoOp], concurrency=100, handle_signals=False).run_until_idle()
    for case, _, run_in, retrying in cases:
        await reset(db)
        if run_in is not None:
            await insert_backlog(db, backlog, run_in=run_in, retrying=retrying)
        queues = BACKLOG_QUEUES if case == "d" else BACKLOG_QUEUES[:1]
        for _ in range(rounds):
            rate = await _worker_drain_rate(db, due, queues=queues)
            rates[case] = max(rates.get(case, 0.0), rate)
    return [
        Row(
            f"6{case}. drain {due} due, concurrency 100, {label}",
            "jobs/s",
            rates[case],
            "(a): the same drain, nothing else in the table",
            rates["a"],
            higher_is_better=True,
            key=f"backlog-{case}",
        )
        for case, label, _, _ in cases
    ]


# --- 7. one-commit enqueue vs a plain ORM insert ----------------------------------------------


async def bench_orm_insert(db: ScratchDatabase, n: int, rounds: int = 4) -> list[Row]:
    """`enqueue` + commit vs a same-shaped plain row + commit, on one AsyncSession; and the
    marginal cost of one enqueue inside a business transaction.

    The variants alternate in `rounds` blocks, so a noisy neighbour hurts them alike.
    """
    await reset(db)
    engine = create_engine(db.url)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    block = max(1, n // rounds)
    seconds = dict.fromkeys(
        ("enqueue", "plain", "business", "business+enqueue", "business+row"), 0.0
    )

    async def commit_each(variant: str, session: AsyncSession) -> None:
        for i in range(block):
            if variant == "enqueue":
                session.add(enqueue(NoOp(n=i)))
            elif variant == "plain":
                session.add(bench_row(i))
            else:  # a business transaction: an order, maybe with a job or a plain row beside it
                session.add(BenchOrder(customer="bench", amount_cents=i))
                if variant == "business+enqueue":
                    session.add(enqueue(NoOp(n=i)))
                elif variant == "business+row":
                    session.add(bench_row(i))
            await session.commit()

    try:
        async with sessionmaker() as session:
            for variant in seconds:  # warm up: compile each statement, open the connection
                await commit_each(variant, session)
            for _ in range(rounds):
                for variant in seconds:
                    seconds[variant] += await timed(
                        lambda variant=variant: commit_each(variant, session)
                    )
    finally:
        await engine.dispose()
    done = block * rounds
    per_txn_us = {variant: s / done * 1e6 for variant, s in seconds.items()}
    name = f"7. {done} commits on one AsyncSession"
    return [
        Row(
            f"{name}: session.add(enqueue(...)); commit",
            "jobs/s",
            done / seconds["enqueue"],
            "the same with a plain same-shaped ORM row",
            done / seconds["plain"],
            higher_is_better=True,
            key="orm",
        ),
        Row(
            f"{name}: an order + one enqueue, per transaction",
            "us",
            per_txn_us["business+enqueue"],
            "the order alone",
            per_txn_us["business"],
            higher_is_better=False,
        ),
        Row(
            "7. (same run) marginal cost of one enqueue in a business transaction",
            "us",
            per_txn_us["business+enqueue"] - per_txn_us["business"],
            "marginal cost of a plain job-shaped ORM row there",
            per_txn_us["business+row"] - per_txn_us["business"],
            higher_is_better=False,
        ),
    ]


# --- the table and the command line -----------------------------------------------------------


def format_table(rows: Sequence[Row]) -> str:
    headers = ("scenario", "sqla_jobs", "baseline", "ratio", "unit", "baseline is")
    cells = [
        (
            row.scenario,
            _number(row.sqla_jobs),
            _number(row.raw),
            f"{row.ratio:.2f}",
            row.unit,
            row.baseline,
        )
        for row in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    right = {1, 2, 3}

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(c) for c in cells)])


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description="Benchmark sqla_jobs against raw asyncpg and its peers on scratch databases.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SQLA_JOBS_DATABASE_URL", DEFAULT_URL),
        help="admin PostgreSQL URL (default: $SQLA_JOBS_DATABASE_URL or %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke check")
    parser.add_argument(
        "--only", default="1,2,3,4,5,6,7", help="comma-separated scenarios to run (default: all)"
    )
    parser.add_argument(
        "--peers",
        default="pgqueuer,procrastinate",
        help="peers run through scenarios 2-4, comma-separated, or none (default: %(default)s)",
    )
    parser.add_argument("--enqueue", type=int, help="jobs of scenarios 1 and 7 (default 2000)")
    parser.add_argument("--bulk", type=int, help="jobs of scenario 2 (default 10000)")
    parser.add_argument("--drain", type=int, help="jobs of scenarios 3 and 6 (default 10000)")
    parser.add_argument(
        "--drain-rounds",
        type=int,
        help="runs of each bulk insert of scenario 2 and each drain of scenarios 3 and 6, "
        "sqla_jobs, raw and peers alike; the best counts (default 3)",
    )
    parser.add_argument(
        "--concurrency",
        help="comma-separated Worker concurrencies of scenario 3 (default 1,16,100)",
    )
    parser.add_argument("--latency-jobs", type=int, help="jobs of scenario 4 (default 200)")
    parser.add_argument(
        "--latency-interval", type=float, default=0.02, help="seconds between scenario 4 jobs"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="the worker's poll interval, scenario 4"
    )
    parser.add_argument("--rss-backlog", type=int, help="jobs of scenario 5 (default 1000000)")
    parser.add_argument(
        "--rss-concurrency", type=int, default=100, help="Worker concurrency of scenario 5"
    )
    parser.add_argument(
        "--backlog", type=int, help="jobs not due in scenario 6 (b) and (c) (default 1000000)"
    )
    parser.add_argument(
        "--processes",
        default="1,2",
        help="scale-out: drain with `python -m sqla_jobs.worker --processes N` for each N "
        "(comma-separated, default %(default)s; 0: skip)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    base = QUICK_SIZES if args.quick else DEFAULT_SIZES
    return Sizes(
        enqueue=args.enqueue or base.enqueue,
        bulk=args.bulk or base.bulk,
        drain=args.drain or base.drain,
        drain_rounds=args.drain_rounds or base.drain_rounds,
        concurrencies=(
            tuple(int(c) for c in args.concurrency.split(","))
            if args.concurrency
            else base.concurrencies
        ),
        latency_jobs=args.latency_jobs or base.latency_jobs,
        rss_backlog=args.rss_backlog or base.rss_backlog,
        backlog=args.backlog or base.backlog,
    )


def figures_from(rows: Sequence[Row]) -> dict[str, float]:
    """The keyed rows' figures (``<key>`` and ``raw <key>``); ``drain`` is the best of them."""
    figures: dict[str, float] = {}
    for row in rows:
        if not row.key:
            continue
        if row.key == "drain":
            figures["drain"] = max(figures.get("drain", 0.0), row.sqla_jobs)
            figures["raw drain"] = max(figures.get("raw drain", 0.0), row.raw)
        else:
            figures[row.key] = row.sqla_jobs
            figures[f"raw {row.key}"] = row.raw
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(*args.child)
    sizes = sizes_from(args)
    selected = {s.strip() for s in args.only.split(",")}
    # The peers share scenarios 2-4 only: `--only 6` alone runs no peer.
    peer_names = peers.parse_peers(args.peers) if selected & {"2", "3", "4"} else []
    process_counts = [int(p) for p in args.processes.split(",") if int(p) > 0]
    admin_url = make_url(args.database_url)
    rows: list[Row] = []
    started = time.perf_counter()
    print(f"scratch database next to {display_url(admin_url)}; sizes: {sizes}", file=sys.stderr)
    with scratch_database(admin_url) as db:
        server_version = asyncio.run(_server_version(db))

        def run(number: str, scenario: Callable[[], list[Row]]) -> None:
            if number not in selected:
                return
            scenario_started = time.perf_counter()
            new_rows = scenario()
            rows.extend(new_rows)
            took = time.perf_counter() - scenario_started
            print(f"scenario {number} done in {took:.1f} s", file=sys.stderr)

        run("1", lambda: asyncio.run(bench_enqueue_per_commit(db, sizes.enqueue)))
        run("2", lambda: asyncio.run(bench_enqueue_many(db, sizes.bulk, sizes.drain_rounds)))
        run(
            "3",
            lambda: asyncio.run(
                bench_drain(db, sizes.drain, sizes.concurrencies, sizes.drain_rounds)
            ),
        )
        for processes in process_counts:
            run("3", lambda p=processes: bench_drain_processes(db, sizes.drain, p))
        run(
            "4",
            lambda: asyncio.run(
                bench_latency(db, sizes.latency_jobs, args.latency_interval, args.poll_interval)
            ),
        )
        run("5", lambda: bench_rss(db, sizes.rss_backlog, args.rss_concurrency))
        run(
            "6",
            lambda: asyncio.run(bench_backlog(db, sizes.drain, sizes.backlog, sizes.drain_rounds)),
        )
        run("7", lambda: asyncio.run(bench_orm_insert(db, sizes.enqueue)))
    peer_results = peers.run_peers(
        peer_names,
        admin_url,
        bulk=sizes.bulk,
        drain=sizes.drain,
        drain_rounds=sizes.drain_rounds,
        latency_jobs=sizes.latency_jobs,
        latency_interval=args.latency_interval,
        quick=args.quick,
    )
    total = time.perf_counter() - started

    figures = figures_from(rows)
    print(format_table(rows))
    print(
        "\nratio = the sqla_jobs figure over the baseline (for jobs/s higher is better, for "
        "ms, us and MiB lower)."
    )
    if peer_results:
        print(f"\n{peers.format_comparison(figures, peer_results)}")
    print(f"\n{peers.format_targets(figures, peer_results)}")
    machine = (
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, asyncpg "
        f"{asyncpg.__version__}, {os.cpu_count()} CPUs, {_memory_gib():.0f} GiB; {server_version}"
    )
    print(f"\nTotal {total:.0f} s; {machine}")
    if args.json:
        document = {
            "sizes": asdict(sizes),
            "poll_interval": args.poll_interval,
            "seconds": total,
            "machine": machine,
            "rows": [asdict(row) | {"ratio": row.ratio} for row in rows],
            "peers": [asdict(result) for result in peer_results],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


async def _server_version(db: ScratchDatabase) -> str:
    connection = await asyncpg.connect(db.dsn)
    try:
        return str(await connection.fetchval("SELECT version()"))
    finally:
        await connection.close()


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


if __name__ == "__main__":
    sys.exit(main())
