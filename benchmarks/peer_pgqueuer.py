"""PgQueuer through the benchmark's scenarios, with its documented API only.

Imported only when ``pgqueuer`` is installed (``pip install -e ".[bench]"``). The worker of the
latency scenario runs in its own process, ``python -m peer_pgqueuer``: `pgqueuer.run()` on
`worker_factory`, what ``pgq run peer_pgqueuer:worker_factory`` does (the CLI of 1.6.0 fails on
its own ``--log-level`` default). The factory reads ``PGDSN`` (as ``pgq`` does) and
``BENCH_STAMP_FILE``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from harness import paced, read_stamps, start_process, stop_process, timed, wait_for
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Job, QueueManager, run
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

NOOP = "bench_noop"
STAMP = "bench_stamp"


@dataclass(frozen=True)
class DrainSetting:
    """One way to run PgQueuer's drain: its driver, and jobs fetched per dequeue."""

    pool_size: int  # 0: one connection (AsyncpgDriver), else an asyncpg pool of this size
    batch_size: int

    def __str__(self) -> str:
        driver = f"pool of {self.pool_size}" if self.pool_size else "one connection"
        return f"{driver}, batch_size={self.batch_size}"


DRAIN_SETTINGS = (DrainSetting(0, 10), DrainSetting(10, 10), DrainSetting(10, 100))


def version() -> str:
    import pgqueuer

    return str(pgqueuer.__version__)


async def install(dsn: str) -> None:
    """Create PgQueuer's schema (what ``pgq install`` runs) in the peer's fresh database."""
    connection = await asyncpg.connect(dsn)
    try:
        await Queries.from_asyncpg_connection(connection).install()
    finally:
        await connection.close()


async def bulk_enqueue(dsn: str, n: int) -> float:
    """Seconds of one ``Queries.enqueue`` call with lists of `n` entrypoints and payloads."""
    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries.from_asyncpg_connection(connection)
        await queries.enqueue(NOOP, b"warm-up")  # prepare the statement
        await queries.clear_queue()
        payloads: list[bytes | None] = [b'{"n": %d}' % i for i in range(n)]
        return await timed(lambda: queries.enqueue([NOOP] * n, payloads, [0] * n))
    finally:
        await connection.close()


async def drain(dsn: str, n: int, setting: DrainSetting) -> float:
    """Seconds for ``QueueManager.run(mode=drain)`` to run a backlog of `n` no-ops."""
    connection = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=setting.pool_size or 1)
    try:
        queries = Queries.from_asyncpg_connection(connection)
        await queries.clear_queue()
        await queries.enqueue([NOOP] * n, [b'{"n": %d}' % i for i in range(n)], [0] * n)
        await connection.execute("VACUUM ANALYZE pgqueuer")
        driver = AsyncpgPoolDriver(pool) if setting.pool_size else AsyncpgDriver(connection)
        manager = QueueManager(Queries(driver))
        done = 0

        @manager.entrypoint(NOOP)
        async def noop(job: Job) -> None:
            nonlocal done
            done += 1

        seconds = await timed(
            lambda: manager.run(
                mode=QueueExecutionMode.drain,
                batch_size=setting.batch_size,
                # The drain's last check waits this long for a NOTIFY that never comes.
                dequeue_timeout=timedelta(seconds=0.05),
                log_aggregation_interval=timedelta(0),
            )
        )
        remaining = await connection.fetchval("SELECT count(*) FROM pgqueuer")
        assert done == n, (done, n)
        assert remaining == 0, remaining
        return seconds
    finally:
        await pool.close()
        await connection.close()


async def latency(dsn: str, n: int, interval: float, stamps: Path) -> list[float]:
    """ms from just before ``Queries.enqueue`` to the job's start, in a ``pgq run`` worker.

    The worker is woken by PgQueuer's insert trigger (NOTIFY); it waits on it, not on a poll.
    """
    process, log = start_process(
        ["-m", "peer_pgqueuer"],
        PGDSN=dsn,
        BENCH_STAMP_FILE=str(stamps),
    )
    connection = await asyncpg.connect(dsn)
    before_ns: dict[int, int] = {}
    try:
        queries = Queries.from_asyncpg_connection(connection)

        async def produce(i: int) -> None:
            before_ns[i] = time.time_ns()
            await queries.enqueue(STAMP, str(i).encode())

        # A first job proves the worker is up and listening; it is not measured.
        await produce(-1)
        await wait_for(lambda: stamps.exists() and "-1 " in stamps.read_text(), 60, log)
        await asyncio.sleep(0.5)
        await paced(n, interval, produce)
        await wait_for(lambda: len(read_stamps(stamps)) > n, n * interval + 30)
        started = read_stamps(stamps)
    finally:
        await connection.close()
        stop_process(process, log)
    return [(started[i] - before_ns[i]) / 1e6 for i in range(n)]


@asynccontextmanager
async def worker_factory() -> AsyncIterator[QueueManager]:
    """The ``pgq run`` factory of the latency worker: one connection, the stamp entrypoint."""
    connection = await asyncpg.connect(os.environ["PGDSN"])
    manager = QueueManager(Queries.from_asyncpg_connection(connection))

    @manager.entrypoint(STAMP)
    async def stamp(job: Job) -> None:
        started_ns = time.time_ns()
        with open(os.environ["BENCH_STAMP_FILE"], "a") as out:
            out.write(f"{(job.payload or b'').decode()} {started_ns}\n")

    try:
        yield manager
    finally:
        await connection.close()


def drain_settings(quick: bool) -> Sequence[DrainSetting]:
    return DRAIN_SETTINGS[1:2] if quick else DRAIN_SETTINGS


if __name__ == "__main__":
    asyncio.run(run(worker_factory))  # SIGTERM stops it
