"""Measure sqla_jobs against a raw asyncpg baseline on the same PostgreSQL, in the same run.

    python benchmarks/bench.py            # defaults; a few minutes
    python benchmarks/bench.py --quick    # small sizes, a smoke check (< 60 s)

Creates a scratch database ``sqla_jobs_bench_<hex>`` next to ``$SQLA_JOBS_DATABASE_URL`` (an
admin URL: its user creates and drops databases), migrates it, runs the scenarios and drops it.
See benchmarks/README.md for what each line means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import sqlalchemy
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))  # bench_tasks, also when run from elsewhere

import bench_tasks  # noqa: E402
from bench_tasks import NoOp, Stamp  # noqa: E402

from sqla_jobs import Worker, enqueue  # noqa: E402
from sqla_jobs.engine import create_engine  # noqa: E402
from sqla_jobs.enqueue import enqueue_many  # noqa: E402
from sqla_jobs.models import Job  # noqa: E402
from sqla_jobs.urls import display_url, to_async_url, to_sync_url  # noqa: E402

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
    concurrencies: tuple[int, ...]
    latency_jobs: int
    backlog: int


DEFAULT_SIZES = Sizes(
    enqueue=2_000,
    bulk=10_000,
    drain=10_000,
    concurrencies=(1, 16, 100),
    latency_jobs=200,
    backlog=100_000,
)
QUICK_SIZES = Sizes(
    enqueue=200, bulk=1_000, drain=500, concurrencies=(1, 16, 100), latency_jobs=20, backlog=2_000
)


@dataclass(frozen=True)
class Row:
    """One line of the result table: a sqla_jobs figure beside its raw asyncpg baseline."""

    scenario: str
    unit: str
    sqla_jobs: float
    baseline: str
    raw: float
    higher_is_better: bool

    @property
    def ratio(self) -> float:
        """sqla_jobs / raw: the issue's targets (">= 0.25x raw") read off this directly."""
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
    name = f"sqla_jobs_bench_{uuid.uuid4().hex[:12]}"
    admin = create_sync_engine(to_sync_url(admin_url), isolation_level="AUTOCOMMIT")
    quoted = admin.dialect.identifier_preparer.quote_identifier(name)
    url = admin_url.set(database=name)
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {quoted}"))  # a name generated above
    try:
        _migrate(url)
        db = ScratchDatabase(
            url=to_async_url(url).render_as_string(hide_password=False),
            dsn=url.set(drivername="postgresql").render_as_string(hide_password=False),
        )
        asyncio.run(_create_raw_table(db))
        yield db
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        admin.dispose()


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
    """Empty both job tables and refresh planner statistics, so scenarios do not leak."""
    connection = await asyncpg.connect(db.dsn)
    try:
        await connection.execute(f"TRUNCATE {Job.__tablename__}, bench_raw")
        await connection.execute(f"VACUUM ANALYZE {Job.__tablename__}")
        await connection.execute("VACUUM ANALYZE bench_raw")
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


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    """Run `action` and return the seconds it took."""
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


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


async def bench_enqueue_many(db: ScratchDatabase, n: int) -> list[Row]:
    await reset(db)
    engine = create_engine(db.url)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    tasks = [NoOp(n=i) for i in range(n)]

    async def insert_in_chunks() -> None:
        async with sessionmaker() as session:
            for statement in enqueue_many(tasks):
                await session.execute(statement)
            await session.commit()

    try:
        await _warm_up_sqla(sessionmaker)
        seconds = await timed(insert_in_chunks)
        assert await count_jobs(engine) == n
    finally:
        await engine.dispose()

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
    return [
        Row(
            f"2. enqueue_many {n}, one transaction",
            "jobs/s",
            n / seconds,
            "raw INSERT ... SELECT unnest($1)",
            n / raw_seconds,
            higher_is_better=True,
        )
    ]


# --- 3. drain -------------------------------------------------------------------------------


async def fill_jobs(db: ScratchDatabase, n: int) -> None:
    """Insert `n` NoOp jobs with `enqueue_many`, committed."""
    engine = create_engine(db.url)
    try:
        sessionmaker = async_sessionmaker(engine)
        async with sessionmaker() as session:
            for statement in enqueue_many(NoOp(n=i) for i in range(n)):
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


async def bench_drain(db: ScratchDatabase, n: int, concurrencies: Sequence[int]) -> list[Row]:
    raw: dict[int, float] = {}
    for batch in (1, 100):
        await reset(db)
        await fill_raw(db, n)
        drained = 0

        async def drain(batch: int = batch) -> None:
            nonlocal drained
            drained = await raw_drain(db.dsn, batch)

        seconds = await timed(drain)
        assert drained == n, (drained, n)
        raw[batch] = n / seconds

    rows = []
    for concurrency in concurrencies:
        await reset(db)
        await fill_jobs(db, n)
        worker = Worker(db.url, tasks=[NoOp], concurrency=concurrency, handle_signals=False)
        processed = 0

        async def run(worker: Worker = worker) -> None:
            nonlocal processed
            processed = await worker.run_until_idle()

        seconds = await timed(run)
        assert processed == n, (processed, n)
        batch = 1 if concurrency == 1 else 100
        rows.append(
            Row(
                f"3. drain {n} no-ops, Worker concurrency={concurrency}",
                "jobs/s",
                n / seconds,
                f"raw claim+delete, {RAW_CONNECTIONS} conns, batch {batch}",
                raw[batch],
                higher_is_better=True,
            )
        )
    return rows


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
            f"3. drain {n} no-ops, --processes {processes} x concurrency 100",
            "jobs/s",
            n / seconds,
            f"raw claim+delete, {processes * RAW_CONNECTIONS} conns, batch 100",
            n / raw_seconds,
            higher_is_better=True,
        )
    ]


async def _wait_for_async(predicate: Callable[[], bool], timeout: float = 60) -> None:
    await _wait_for(predicate, timeout)


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


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-100) of `values`."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return ordered[int(rank) - 1]


async def _paced(n: int, interval: float, action: Callable[[int], Awaitable[None]]) -> None:
    """Call `action(i)` for i in range(n), starting one every `interval` seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
        await action(i)


async def _wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark waited too long for its condition")
        await asyncio.sleep(0.01)


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
        await _wait_for(lambda: "worker started" in log.read_text(), 30)
        # Started: its listener connects within milliseconds; no per-job DEBUG lines needed.
        await asyncio.sleep(0.5)
        await _paced(n, interval, enqueue_stamp)
        await _wait_for(lambda: _lines(stamps) >= n, timeout)
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
        )
        for clock, ours, raw, baseline in (
            ("commit-to-start", from_commit, raw_from_commit, "raw LISTEN/NOTIFY + claim"),
            ("enqueue-to-start", from_enqueue, raw_from_start, "raw INSERT+NOTIFY, claim"),
        )
        for q in (50, 95, 99)
    ]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _start_worker_process(
    db: ScratchDatabase, arguments: Sequence[str], **env: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``python -m sqla_jobs.worker`` on `db`; its log goes to a file (pipes can fill up)."""
    log = BENCH_DIR / f".worker-{uuid.uuid4().hex[:8]}.log"
    environment = dict(os.environ) | env | {"SQLA_JOBS_DATABASE_URL": db.url}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH_DIR), str(BENCH_DIR.parent), environment.get("PYTHONPATH", "")]
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "sqla_jobs.worker", "--import", "bench_tasks", *arguments],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, log


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
        await _paced(n, interval, produce)
        await _wait_for(lambda: len(started_ns) >= n, timeout)
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
    asyncio.run(fill_jobs(db, backlog))
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
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH_DIR), str(BENCH_DIR.parent), env.get("PYTHONPATH", "")]
    )
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *arguments],
        env=env,
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


# --- the table and the command line -----------------------------------------------------------


def format_table(rows: Sequence[Row]) -> str:
    headers = ("scenario", "sqla_jobs", "raw asyncpg", "sqla/raw", "unit", "baseline")
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
        description="Benchmark sqla_jobs against raw asyncpg on a scratch PostgreSQL database.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SQLA_JOBS_DATABASE_URL", DEFAULT_URL),
        help="admin PostgreSQL URL (default: $SQLA_JOBS_DATABASE_URL or %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke check")
    parser.add_argument(
        "--only", default="1,2,3,4,5", help="comma-separated scenarios to run (default: all)"
    )
    parser.add_argument("--enqueue", type=int, help="jobs of scenario 1 (default 2000)")
    parser.add_argument("--bulk", type=int, help="jobs of scenario 2 (default 10000)")
    parser.add_argument("--drain", type=int, help="jobs of scenario 3 (default 10000)")
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
    parser.add_argument("--backlog", type=int, help="jobs of scenario 5 (default 100000)")
    parser.add_argument(
        "--rss-concurrency", type=int, default=100, help="Worker concurrency of scenario 5"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="also drain with `python -m sqla_jobs.worker --processes N` (default 2; 1: skip)",
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
        concurrencies=(
            tuple(int(c) for c in args.concurrency.split(","))
            if args.concurrency
            else base.concurrencies
        ),
        latency_jobs=args.latency_jobs or base.latency_jobs,
        backlog=args.backlog or base.backlog,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(*args.child)
    sizes = sizes_from(args)
    selected = {s.strip() for s in args.only.split(",")}
    admin_url = make_url(args.database_url)
    rows: list[Row] = []
    notes: list[str] = []
    started = time.perf_counter()
    print(f"scratch database next to {display_url(admin_url)}; sizes: {sizes}", file=sys.stderr)
    with scratch_database(admin_url) as db:

        def run(number: str, scenario: Callable[[], list[Row]]) -> None:
            if number not in selected:
                return
            scenario_started = time.perf_counter()
            new_rows = scenario()
            rows.extend(new_rows)
            took = time.perf_counter() - scenario_started
            print(f"scenario {number} done in {took:.1f} s", file=sys.stderr)

        run("1", lambda: asyncio.run(bench_enqueue_per_commit(db, sizes.enqueue)))
        run("2", lambda: asyncio.run(bench_enqueue_many(db, sizes.bulk)))
        run("3", lambda: asyncio.run(bench_drain(db, sizes.drain, sizes.concurrencies)))
        if args.processes > 1 and "3" in selected:
            rows.extend(bench_drain_processes(db, sizes.drain, args.processes))
        run(
            "4",
            lambda: asyncio.run(
                bench_latency(db, sizes.latency_jobs, args.latency_interval, args.poll_interval)
            ),
        )
        run("5", lambda: bench_rss(db, sizes.backlog, args.rss_concurrency))
    total = time.perf_counter() - started

    print(format_table(rows))
    print(
        f"\nsqla/raw = the sqla_jobs figure over the raw one (for jobs/s higher is better, for "
        f"ms and MiB lower). "
        f"Total {total:.0f} s; Python {platform.python_version()}, SQLAlchemy "
        f"{sqlalchemy.__version__}, asyncpg {asyncpg.__version__}, {os.cpu_count()} CPUs."
    )
    for note in notes:
        print(note)
    if args.json:
        document = {
            "sizes": asdict(sizes),
            "poll_interval": args.poll_interval,
            "seconds": total,
            "python": platform.python_version(),
            "sqlalchemy": sqlalchemy.__version__,
            "asyncpg": asyncpg.__version__,
            "cpus": os.cpu_count(),
            "notes": notes,
            "rows": [asdict(row) | {"ratio": row.ratio} for row in rows],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
