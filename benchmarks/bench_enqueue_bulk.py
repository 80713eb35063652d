"""Compare `enqueue_bulk()` (COPY) with `enqueue_many()` (INSERT) on PostgreSQL, in jobs/s.

    python benchmarks/bench_enqueue_bulk.py                 # 10 000 and 100 000 jobs
    python benchmarks/bench_enqueue_bulk.py --sizes 50000 --repeat 5

Creates a scratch database next to ``$SQLA_JOBS_DATABASE_URL`` (an admin URL), migrates it,
times one committed transaction per run (asyncpg AsyncSession, and psycopg sync Session for
`enqueue_bulk`), empties the table between runs and drops the database at the end. Two raw
asyncpg baselines insert into the same table: PgQueuer's shape (one ``INSERT ... SELECT
unnest($1::uuid[]), ...``) and a bare COPY of prepared tuples (the floor: no Python per job).
Each line is the best of ``--repeat`` runs. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tasks import NoOp

from sqla_jobs import enqueue_bulk, enqueue_many, migrate
from sqla_jobs.models import Job
from sqla_jobs.urls import to_async_url, to_sync_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def scratch_database(admin_url: URL) -> Iterator[URL]:
    """Create, migrate and finally drop a database of this run's own."""
    name = f"sqla_jobs_bench_bulk_{uuid.uuid4().hex[:12]}"
    admin = create_engine(to_sync_url(admin_url), isolation_level="AUTOCOMMIT")
    quoted = admin.dialect.identifier_preparer.quote_identifier(name)
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {quoted}"))  # a name generated above
    try:
        url = admin_url.set(database=name)
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        admin.dispose()


async def time_async(url: URL, n: int, form: str) -> float:
    engine = create_async_engine(to_async_url(url))
    tasks = [NoOp(n=i) for i in range(n)]
    try:
        async with AsyncSession(engine) as session:  # warm up the pool and the compiled SQL
            await enqueue_bulk(session, tasks[:10])
            for statement in enqueue_many(tasks[:10]):
                await session.execute(statement)
            await session.rollback()
        start = time.perf_counter()
        async with AsyncSession(engine) as session:
            if form == "enqueue_bulk":
                await enqueue_bulk(session, tasks)
            else:
                for statement in enqueue_many(tasks):
                    await session.execute(statement)
            await session.commit()
        seconds = time.perf_counter() - start
        async with AsyncSession(engine) as session:
            await session.execute(delete(Job))
            await session.commit()
    finally:
        await engine.dispose()
    return seconds


def time_sync(url: URL, n: int) -> float:
    engine = create_engine(to_sync_url(url))
    tasks = [NoOp(n=i) for i in range(n)]
    try:
        with Session(engine) as session:
            enqueue_bulk(session, tasks[:10])
            session.rollback()
        start = time.perf_counter()
        with Session(engine) as session:
            enqueue_bulk(session, tasks)
            session.commit()
        seconds = time.perf_counter() - start
        with Session(engine) as session:
            session.execute(delete(Job))
            session.commit()
    finally:
        engine.dispose()
    return seconds


RAW_UNNEST = (
    "INSERT INTO sqla_jobs_job (id, name, payload, queue, priority, context, error_count)"
    " SELECT unnest($1::uuid[]), $2, unnest($3::jsonb[]), $4, 0, '', 0"
)


async def time_raw(url: URL, n: int, form: str) -> float:
    """PgQueuer's shape (one INSERT ... SELECT unnest(...)) or a bare COPY, on raw asyncpg."""
    connection = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
    ids = [uuid.uuid4() for _ in range(n)]
    payloads = [json.dumps({"n": i}) for i in range(n)]
    try:
        start = time.perf_counter()
        async with connection.transaction():
            if form == "unnest":
                await connection.execute(RAW_UNNEST, ids, "bench.noop", payloads, "bench")
            else:
                await connection.copy_records_to_table(
                    "sqla_jobs_job",
                    records=[
                        (i, "bench.noop", p, "bench") for i, p in zip(ids, payloads, strict=True)
                    ],
                    columns=["id", "name", "payload", "queue"],
                )
        seconds = time.perf_counter() - start
        await connection.execute("DELETE FROM sqla_jobs_job")
    finally:
        await connection.close()
    return seconds


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def measure(url: URL, n: int, repeat: int) -> dict[str, float]:
    """Return the best seconds of each way to insert `n` jobs in one transaction."""
    return {
        "enqueue_many, asyncpg": best(
            repeat, lambda: asyncio.run(time_async(url, n, "enqueue_many"))
        ),
        "enqueue_bulk, asyncpg": best(
            repeat, lambda: asyncio.run(time_async(url, n, "enqueue_bulk"))
        ),
        "enqueue_bulk, psycopg (sync)": best(repeat, lambda: time_sync(url, n)),
        "raw asyncpg INSERT unnest": best(repeat, lambda: asyncio.run(time_raw(url, n, "unnest"))),
        "raw asyncpg COPY": best(repeat, lambda: asyncio.run(time_raw(url, n, "copy"))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated job counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per line; the best counts")
    args = parser.parse_args()
    admin_url = make_url(os.environ.get("SQLA_JOBS_DATABASE_URL", DEFAULT_URL))
    with scratch_database(admin_url) as url:
        for n in (int(size) for size in args.sizes.split(",")):
            for label, seconds in measure(url, n, args.repeat).items():
                print(f"{n:>7} jobs  {label:<30} {n / seconds:>10,.0f} jobs/s", flush=True)


if __name__ == "__main__":
    main()
