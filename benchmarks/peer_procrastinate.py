"""procrastinate through the benchmark's scenarios, with its documented API only.

Imported only when ``procrastinate`` is installed (``pip install -e ".[bench]"``). The worker of
the latency scenario is procrastinate's own CLI,
``python -m procrastinate --app=peer_procrastinate.worker_app worker``, in its own process;
`worker_app` connects to ``BENCH_PEER_DSN`` and its task appends to ``BENCH_STAMP_FILE``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path

import procrastinate
from harness import paced, read_stamps, start_process, stop_process, timed, wait_for

DRAIN_CONCURRENCIES = (1, 10, 50)
LATENCY_CONCURRENCY = 10


def make_app(dsn: str, pool_size: int = 4) -> procrastinate.App:
    """An app with the benchmark's two tasks, on a psycopg pool of `pool_size` connections."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=dsn, min_size=min(pool_size, 4), max_size=pool_size
        )
    )

    @app.task(name="bench_noop")
    async def noop(n: int) -> None:
        return None

    @app.task(name="bench_stamp")
    async def stamp(key: int) -> None:
        started_ns = time.time_ns()
        with open(os.environ["BENCH_STAMP_FILE"], "a") as out:
            out.write(f"{key} {started_ns}\n")

    return app


# The app the CLI worker loads (`--app=peer_procrastinate.worker_app`); it connects on open.
worker_app = make_app(os.environ.get("BENCH_PEER_DSN", ""), pool_size=LATENCY_CONCURRENCY + 2)


def version() -> str:
    from importlib.metadata import version

    return version("procrastinate")


async def install(dsn: str) -> None:
    """Apply procrastinate's schema (what ``procrastinate schema --apply`` runs)."""
    app = make_app(dsn, pool_size=1)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def bulk_enqueue(dsn: str, n: int) -> float:
    """Seconds of one ``Task.batch_defer_async`` of `n` jobs."""
    app = make_app(dsn, pool_size=1)
    async with app.open_async():
        task = app.tasks["bench_noop"]
        await task.defer_async(n=-1)  # open the pool's connection before the clock
        await _delete_jobs(app)
        kwargs = [{"n": i} for i in range(n)]
        return await timed(lambda: task.batch_defer_async(*kwargs))


async def drain(dsn: str, n: int, concurrency: int) -> float:
    """Seconds of ``App.run_worker_async(wait=False)`` (it returns once caught up) on `n` no-ops.

    The pool has a connection per concurrent job (up to 20) plus the listener's and one more.
    """
    app = make_app(dsn, pool_size=min(concurrency, 20) + 2)
    async with app.open_async():
        await _delete_jobs(app)
        await app.tasks["bench_noop"].batch_defer_async(*({"n": i} for i in range(n)))
        seconds = await timed(
            lambda: app.run_worker_async(
                concurrency=concurrency,
                wait=False,
                install_signal_handlers=False,
                # Finished jobs leave the table, as sqla_jobs' and PgQueuer's do.
                delete_jobs="successful",
            )
        )
        left = await app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_jobs"
        )
        assert left["n"] == 0, (left, n)
        return seconds


async def latency(dsn: str, n: int, interval: float, stamps: Path) -> list[float]:
    """ms from just before ``Task.defer_async`` to the job's start, in a CLI worker.

    The worker listens (``listen_notify``, procrastinate's default) for the defer's NOTIFY.
    """
    process, log = start_process(
        # Concurrency 10, sqla_jobs' default (procrastinate's is 1): jobs 20 ms apart must not
        # queue behind each other on a loaded machine, or this measures throughput instead.
        [
            "-m",
            "procrastinate",
            "--app=peer_procrastinate.worker_app",
            "worker",
            f"--concurrency={LATENCY_CONCURRENCY}",
        ],
        BENCH_PEER_DSN=dsn,
        BENCH_STAMP_FILE=str(stamps),
    )
    app = make_app(dsn, pool_size=1)
    before_ns: dict[int, int] = {}
    try:
        async with app.open_async():
            task = app.tasks["bench_stamp"]

            async def produce(i: int) -> None:
                before_ns[i] = time.time_ns()
                await task.defer_async(key=i)

            # A first job proves the worker is up and listening; it is not measured.
            await produce(-1)
            await wait_for(lambda: stamps.exists() and "-1 " in stamps.read_text(), 60, log)
            await asyncio.sleep(0.5)
            await paced(n, interval, produce)
            await wait_for(lambda: len(read_stamps(stamps)) > n, n * interval + 30)
            started = read_stamps(stamps)
    finally:
        stop_process(process, log)
    return [(started[i] - before_ns[i]) / 1e6 for i in range(n)]


async def _delete_jobs(app: procrastinate.App) -> None:
    await app.connector.execute_query_async("DELETE FROM procrastinate_jobs")


def drain_settings(quick: bool) -> Sequence[int]:
    return DRAIN_CONCURRENCIES[1:2] if quick else DRAIN_CONCURRENCIES
