"""Chaos soak: worker processes SIGKILLed at random while they drain a large backlog.

    python benchmarks/chaos_soak.py                                # defaults, 5 to 7 minutes
    python benchmarks/chaos_soak.py --jobs 20000 --chaos-seconds 60

Not part of the test suite. Creates a scratch database ``sqla_jobs_soak_<hex>`` next to
``$SQLA_JOBS_DATABASE_URL`` (an admin URL, default
``postgresql://postgres@127.0.0.1:5432/postgres``), migrates it, and drops it at the end.

It enqueues `--jobs` jobs, half `SoakPlain` (each run writes an attempt row: at least once),
half `SoakTransactional` (each also writes its app row through `ctx.transaction()`: exactly
once), starts `--workers` ``python -m sqla_jobs.worker`` processes (separate processes, so each
can be killed alone), and for `--chaos-seconds` SIGKILLs a random one about every
`--kill-every` seconds, restarting it at once. Then it lets them drain without kills until the
jobs table is empty, and SIGTERMs them. Heartbeats are fast (0.5 s, dead after 3 s), so the
jobs of killed workers are rescued within seconds.

It prints the jobs, the kills, lost jobs (neither completed nor dead-lettered), duplicated app
rows of transactional jobs, at-least-once reruns of plain jobs (attempts - jobs), dead letters
and the wall time, and exits 1 if any job was lost or any app row duplicated.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, func, select, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))  # chaos_tasks, also when run from elsewhere

from chaos_tasks import (  # noqa: E402
    SOAK_QUEUE,
    SoakPlain,
    SoakTransactional,
    app_rows,
    attempts,
    soak_metadata,
)

from sqla_jobs import migrate  # noqa: E402
from sqla_jobs.enqueue import enqueue_many  # noqa: E402
from sqla_jobs.models import DeadLetterJob, Job  # noqa: E402
from sqla_jobs.urls import display_url, to_sync_url  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FAST_HEARTBEATS = {"SQLA_JOBS_HEARTBEAT_INTERVAL": "0.5", "SQLA_JOBS_HEARTBEAT_TIMEOUT": "3"}


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@contextmanager
def scratch_database(admin_url: URL) -> Iterator[URL]:
    """Create, migrate and finally drop a database of this run's own; yield its URL."""
    admin = create_sync_engine(to_sync_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"sqla_jobs_soak_{uuid.uuid4().hex[:8]}"
    quoted = admin.dialect.identifier_preparer.quote_identifier(name)
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {quoted}"))
    url = admin_url.set(database=name)
    try:
        with admin.connect() as connection:
            # The soak kills workers, never the server: commits need not wait for the disk,
            # and without it a shared, fsyncing server measures its disk, not the workers.
            connection.execute(text(f"ALTER DATABASE {quoted} SET synchronous_commit = off"))
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        admin.dispose()


class WorkerSlot:
    """One worker process of the soak, restartable after a kill; output goes to a file."""

    def __init__(self, index: int, url: URL, log_dir: Path, concurrency: int) -> None:
        self.index = index
        self.starts = 0
        self._log_dir = log_dir
        self._command = [
            sys.executable,
            "-m",
            "sqla_jobs.worker",
            "--import",
            "chaos_tasks",
            "--queues",
            SOAK_QUEUE,
            "--concurrency",
            str(concurrency),
        ]
        self._env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(BENCH_DIR), str(REPO), os.environ.get("PYTHONPATH", "")]
            ),
            "SQLA_JOBS_DATABASE_URL": _render(url),
            "SQLA_JOBS_POLL_INTERVAL": "0.2",
            "SQLA_JOBS_LOG_LEVEL": "WARNING",
            **FAST_HEARTBEATS,
        }
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        log_path = self._log_dir / f"worker-{self.index}-{self.starts}.log"
        with log_path.open("wb") as log:
            return subprocess.Popen(
                self._command, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill_and_restart(self) -> None:
        """SIGKILL the process (no shutdown, no lock release) and start a new one at once."""
        self.process.kill()
        self.process.wait()
        self.process = self._spawn()

    def terminate(self, timeout: float) -> int | None:
        """SIGTERM the process and wait up to `timeout` s; SIGKILL it if it is still there."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def count(engine: Engine, table: object, *where: object) -> int:
    """Count the rows of `table` (a Table or a mapped class)."""
    with engine.connect() as connection:
        query = select(func.count()).select_from(table).where(*where)  # type: ignore[arg-type]  # Table or mapped class
        return connection.scalar(query) or 0


def enqueue_backlog(engine: Engine, jobs: int) -> None:
    """Commit `jobs` jobs, plain and transactional alternately, keys 0 … jobs-1."""
    tasks = (SoakPlain(key=n) if n % 2 == 0 else SoakTransactional(key=n) for n in range(jobs))
    with engine.begin() as connection:
        for statement in enqueue_many(tasks):
            connection.execute(statement)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8, help="jobs at once per worker")
    parser.add_argument("--kill-every", type=float, default=3.0, help="mean seconds between kills")
    parser.add_argument("--chaos-seconds", type=float, default=120.0)
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="give up the clean drain after this"
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    admin_url = make_url(os.environ.get("SQLA_JOBS_DATABASE_URL", DEFAULT_URL))
    print(f"server: {display_url(admin_url)}", flush=True)

    with scratch_database(admin_url) as url, tempfile.TemporaryDirectory() as log_dir:
        engine = create_sync_engine(to_sync_url(url), pool_size=1, max_overflow=0)
        try:
            soak_metadata.create_all(engine)
            enqueue_backlog(engine, args.jobs)
            with engine.connect() as connection:
                # Autovacuum has not seen the bulk load yet: with the empty table's statistics
                # the claim sorts the whole backlog each time instead of reading its index.
                connection.execute(text("ANALYZE"))
                connection.commit()
            print(f"enqueued {args.jobs} jobs; starting {args.workers} workers", flush=True)
            started = time.monotonic()
            slots: list[WorkerSlot] = []
            try:
                return soak(engine, args, rng, slots, url, Path(log_dir), started)
            finally:
                for slot in slots:  # after an error or ^C; a no-op after the clean SIGTERM
                    slot.process.kill()
                    slot.process.wait()
        finally:
            engine.dispose()


def soak(
    engine: Engine,
    args: argparse.Namespace,
    rng: random.Random,
    slots: list[WorkerSlot],
    url: URL,
    log_dir: Path,
    started: float,
) -> int:
    """Start the workers into `slots`, kill them for a while, drain, stop them; report."""
    slots += [WorkerSlot(i, url, log_dir, args.concurrency) for i in range(args.workers)]
    kills = 0
    chaos_until = started + args.chaos_seconds
    next_kill = started + rng.uniform(0.5, 1.5) * args.kill_every
    while time.monotonic() < chaos_until:
        time.sleep(max(0.0, min(next_kill, chaos_until) - time.monotonic()))
        if time.monotonic() >= chaos_until:
            break
        rng.choice(slots).kill_and_restart()
        kills += 1
        next_kill = time.monotonic() + rng.uniform(0.5, 1.5) * args.kill_every
        remaining = count(engine, Job)
        print(f"  {time.monotonic() - started:6.1f} s  kills {kills:3d}  "
              f"jobs left {remaining}", flush=True)  # fmt: skip
        if remaining == 0:
            break
    chaos_ended = time.monotonic()
    print(f"chaos over after {chaos_ended - started:.1f} s; draining", flush=True)
    drain_deadline = chaos_ended + args.drain_timeout
    while count(engine, Job) > 0 and time.monotonic() < drain_deadline:
        time.sleep(1.0)
    drained = time.monotonic()
    exit_codes = [slot.terminate(timeout=30) for slot in slots]
    return report(engine, args, kills, drained - started, exit_codes)


def report(
    engine: Engine,
    args: argparse.Namespace,
    kills: int,
    wall_seconds: float,
    exit_codes: list[int | None],
) -> int:
    """Print the summary; return 1 if a job was lost or an app row duplicated."""
    plain_jobs = (args.jobs + 1) // 2
    transactional_jobs = args.jobs // 2
    with engine.connect() as connection:
        left = {int(p["key"]) for p in connection.scalars(select(Job.payload))}
        dead = {int(p["key"]) for p in connection.scalars(select(DeadLetterJob.payload))}
        attempted_plain = set(
            connection.scalars(select(attempts.c.key).where(attempts.c.kind == "plain").distinct())
        )
        app_counts: dict[int, int] = dict(
            connection.execute(select(app_rows.c.key, func.count()).group_by(app_rows.c.key)).all()
        )
    plain_attempts = count(engine, attempts, attempts.c.kind == "plain")
    transactional_attempts = count(engine, attempts, attempts.c.kind == "transactional")
    # A job's row goes only when it ran to its end or was dead-lettered: once it is gone, an
    # attempt row (plain) or its app row (transactional) shows it completed.
    done = (attempted_plain | set(app_counts) | dead) - left
    lost = args.jobs - len(done & set(range(args.jobs)))
    duplicates = sum(n - 1 for n in app_counts.values() if n > 1)
    print()
    print(f"jobs                               {args.jobs}")
    print(f"workers x concurrency              {args.workers} x {args.concurrency}")
    print(f"kills (SIGKILL)                    {kills}")
    print(f"lost (neither done nor dead)       {lost}")
    print(f"duplicates (transactional app rows) {duplicates}")
    print(f"reruns of plain jobs               {plain_attempts - plain_jobs}")
    print(f"reruns of transactional jobs       {transactional_attempts - transactional_jobs}")
    print(f"dead letters                       {len(dead)}")
    print(f"worker exit codes at SIGTERM       {exit_codes}")
    print(f"wall time                          {wall_seconds:.1f} s")
    return 1 if lost or duplicates else 0


if __name__ == "__main__":
    sys.exit(main())
