"""What bench.py and the peer modules share: scratch databases, clocks, percentiles, children.

No sqla_jobs import here, so a peer's module can use it without pulling the framework in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

BENCH_DIR = Path(__file__).resolve().parent


@contextmanager
def fresh_database(admin_url: URL, prefix: str) -> Iterator[URL]:
    """Create an empty database ``<prefix>_<hex>`` beside `admin_url`; drop it at the end.

    Yields its URL (with the admin URL's driver). The drop runs even after a failure, and
    `WITH (FORCE)` ends whatever connection a crashed worker left open.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        admin_url.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    quoted = admin.dialect.identifier_preparer.quote_identifier(name)
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {quoted}"))  # a name generated above
        try:
            yield admin_url.set(database=name)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()


def libpq_dsn(url: URL) -> str:
    """`url` as a plain ``postgresql://`` DSN, what asyncpg and psycopg take."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    """Run `action` and return the seconds it took."""
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-100) of `values`."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return ordered[int(rank) - 1]


async def paced(n: int, interval: float, action: Callable[[int], Awaitable[None]]) -> None:
    """Call `action(i)` for i in range(n), starting one every `interval` seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
        await action(i)


async def wait_for(predicate: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    """Wait until `predicate()`; on timeout, say so with the end of a worker's `log`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise TimeoutError(
                "the benchmark waited too long for its condition"
                + (f"; the worker's log ends:\n{tail}" if tail else "")
            )
        await asyncio.sleep(0.01)


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def read_stamps(path: Path) -> dict[int, int]:
    """The ``<key> <time_ns>`` lines a stamping job wrote, first start of each key."""
    started: dict[int, int] = {}
    for line in path.read_text().splitlines():
        key, ns = map(int, line.split())
        started.setdefault(key, ns)
    return started


def child_environment(**env: str) -> dict[str, str]:
    """os.environ plus `env`, with benchmarks/ and the repository on PYTHONPATH."""
    environment = dict(os.environ) | env
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH_DIR), str(BENCH_DIR.parent), environment.get("PYTHONPATH", "")]
    )
    return environment


def start_process(arguments: Sequence[str], **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``python <arguments>``; its output goes to a log file (pipes can fill up)."""
    log = BENCH_DIR / f".worker-{uuid.uuid4().hex[:8]}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, *arguments],
            env=child_environment(**env),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, log


def stop_process(process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """SIGTERM `process`, kill it if it does not stop within `timeout`, remove its log."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.unlink(missing_ok=True)
