"""Chaos soak: worker processes SIGKILLed at random while they drain a large backlog.

    python benchmarks/chaos_soak.py                                # defaults, 5 to 7 minutes
    python benchmarks/chaos_soak.py --jobs 20000 --chaos-seconds 60
    python benchmarks/chaos_soak.py --long-jobs 60 --limited-role-connections 6

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

`--long-jobs` adds jobs (`SoakLong`, spread through the backlog) that each run `--long-seconds`,
longer than the heartbeat timeout: a live worker must keep them. With
`--limited-role-connections K`, worker 0 logs in as a role of this run's own created with
CONNECTION LIMIT K, and its long jobs open and hold connections as that role until the server
refuses one: its lease, renewed over a connection of its own, must stay alive regardless.

It prints the jobs, the kills, lost jobs (neither completed nor dead-lettered), duplicates
(transactional app rows beyond one; long jobs that ended twice in processes never killed),
reruns of each kind split by cause (a kill, a failed attempt, or none: a job taken from a live
worker), leases lost, dead letters and the wall time. It exits 1 if any job was lost, anything
duplicated, or any job run again without a cause.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, func, select, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))  # chaos_tasks, also when run from elsewhere

from chaos_tasks import (  # noqa: E402
    HOG_URL_ENV_VAR,
    LEDGER_URL_ENV_VAR,
    SOAK_QUEUE,
    SoakLong,
    SoakPlain,
    SoakTransactional,
    app_rows,
    attempts,
    soak_metadata,
)

from sqla_jobs import Task, migrate  # noqa: E402
from sqla_jobs.enqueue import enqueue_many  # noqa: E402
from sqla_jobs.models import DeadLetterJob, Job  # noqa: E402
from sqla_jobs.urls import display_url, to_sync_url  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HEARTBEAT_TIMEOUT = 3.0
FAST_HEARTBEATS = {
    "SQLA_JOBS_HEARTBEAT_INTERVAL": "0.5",
    "SQLA_JOBS_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
}
KINDS = ("plain", "transactional", "long")


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


@contextmanager
def limited_role(admin_url: URL, connections: int | None) -> Iterator[str | None]:
    """Create a login role of this run's own allowed `connections` connections; drop it after.

    Yields its name (None, and no role, without `connections`). Not a superuser: superusers
    ignore CONNECTION LIMIT. Enter it before `scratch_database`, so the database (where the
    role is granted rights) is dropped first.
    """
    if not connections:
        yield None
        return
    admin = create_sync_engine(to_sync_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"sqla_jobs_soak_limited_{uuid.uuid4().hex[:8]}"
    quoted = admin.dialect.identifier_preparer.quote_identifier(name)
    try:
        with admin.connect() as connection:
            # A generated name and an int: nothing from outside is formatted into the SQL.
            connection.execute(text(f"CREATE ROLE {quoted} LOGIN CONNECTION LIMIT {connections:d}"))
        try:
            yield name
        finally:
            with admin.connect() as connection:
                connection.execute(text(f"DROP ROLE IF EXISTS {quoted}"))
    finally:
        admin.dispose()


def grant_worker_rights(engine: Engine, role: str) -> None:
    """Let `role` do what a worker and the soak's tasks do in `engine`'s database."""
    quoted = engine.dialect.identifier_preparer.quote_identifier(role)
    with engine.begin() as connection:
        connection.execute(
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}")
        )
        connection.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {quoted}"))


class WorkerSlot:
    """One worker process of the soak, restartable after a kill; output goes to a file.

    The worker logs in with `url`; its tasks note their attempts through `ledger_url`, and
    with `hog_url` its long jobs hold connections of that URL's role.
    """

    def __init__(
        self,
        index: int,
        url: URL,
        log_dir: Path,
        concurrency: int,
        *,
        ledger_url: URL,
        hog_url: URL | None = None,
    ) -> None:
        self.index = index
        self.starts = 0
        self.killed_pids: set[int] = set()
        self.log_paths: list[Path] = []
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
            LEDGER_URL_ENV_VAR: _render(ledger_url),
            "SQLA_JOBS_POLL_INTERVAL": "0.2",
            "SQLA_JOBS_LOG_LEVEL": "WARNING",
            **FAST_HEARTBEATS,
        }
        if hog_url is not None:
            # asyncpg takes a libpq URL, without SQLAlchemy's driver name.
            self._env[HOG_URL_ENV_VAR] = _render(hog_url.set(drivername="postgresql"))
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        log_path = self._log_dir / f"worker-{self.index}-{self.starts}.log"
        self.log_paths.append(log_path)
        with log_path.open("wb") as log:
            return subprocess.Popen(
                self._command, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill_and_restart(self) -> None:
        """SIGKILL the process (no shutdown, no lock release) and start a new one at once."""
        self.killed_pids.add(self.process.pid)
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


def backlog(jobs: int, long_jobs: int, long_seconds: float) -> Iterator[Task]:
    """Yield `jobs` plain and transactional tasks alternately (keys 0 … jobs-1), with
    `long_jobs` long ones (keys jobs … jobs+long_jobs-1) spread evenly among them."""
    stride = max(1, jobs // long_jobs) if long_jobs else 0
    long_keys = iter(range(jobs, jobs + long_jobs))
    for n in range(jobs):
        if stride and n % stride == 0 and (key := next(long_keys, None)) is not None:
            yield SoakLong(key=key, seconds=long_seconds)
        yield SoakPlain(key=n) if n % 2 == 0 else SoakTransactional(key=n)
    for key in long_keys:
        yield SoakLong(key=key, seconds=long_seconds)


def enqueue_backlog(engine: Engine, tasks: Iterator[Task]) -> None:
    """Commit `tasks` in one transaction (claimed in this order: they share one created_at)."""
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
    parser.add_argument(
        "--long-jobs", type=int, default=0, help="jobs that run --long-seconds each, besides --jobs"
    )
    parser.add_argument(
        "--long-seconds",
        type=float,
        default=3 * HEARTBEAT_TIMEOUT,
        help=f"how long each long job runs (the heartbeat timeout is {HEARTBEAT_TIMEOUT:g} s)",
    )
    parser.add_argument(
        "--limited-role-connections",
        type=int,
        default=0,
        metavar="K",
        help="worker 0 logs in as a role with CONNECTION LIMIT K, which its long jobs use up",
    )
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="keep the workers' logs here (default: deleted)"
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    admin_url = make_url(os.environ.get("SQLA_JOBS_DATABASE_URL", DEFAULT_URL))
    print(f"server: {display_url(admin_url)}", flush=True)

    with (
        limited_role(admin_url, args.limited_role_connections) as role,
        scratch_database(admin_url) as url,
        tempfile.TemporaryDirectory() as temporary_dir,
    ):
        log_dir = args.log_dir or Path(temporary_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        engine = create_sync_engine(to_sync_url(url), pool_size=1, max_overflow=0)
        try:
            soak_metadata.create_all(engine)
            if role is not None:
                grant_worker_rights(engine, role)
            enqueue_backlog(engine, backlog(args.jobs, args.long_jobs, args.long_seconds))
            with engine.connect() as connection:
                # Autovacuum has not seen the bulk load yet: with the empty table's statistics
                # the claim sorts the whole backlog each time instead of reading its index.
                connection.execute(text("ANALYZE"))
                connection.commit()
            print(
                f"enqueued {args.jobs} jobs and {args.long_jobs} long ones; "
                f"starting {args.workers} workers",
                flush=True,
            )
            started = time.monotonic()
            slots: list[WorkerSlot] = []
            try:
                return soak(engine, args, rng, slots, url, role, log_dir, started)
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
    role: str | None,
    log_dir: Path,
    started: float,
) -> int:
    """Start the workers into `slots`, kill them for a while, drain, stop them; report."""
    for i in range(args.workers):
        # Worker 0 logs in as the limited role, if there is one, and its long jobs use it up.
        login = url.set(username=role) if role is not None and i == 0 else None
        slots.append(
            WorkerSlot(i, login or url, log_dir, args.concurrency, ledger_url=url, hog_url=login)
        )
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
    return report(engine, args, slots, kills, drained - started, exit_codes)


@dataclass
class Reruns:
    """Attempts of one kind beyond one per job, by what ended the attempt before."""

    after_kill: int = 0
    """The attempt's worker was SIGKILLed: the killed worker's job ran again."""
    after_failure: int = 0
    """The attempt raised (noted ``failed``), and the job was retried."""
    without_cause: int = 0
    """Neither: the job was taken from a live worker (its lease) and ran again."""
    by_key: Counter[int] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.after_kill + self.after_failure + self.without_cause


def reruns(rows: Sequence[tuple[int, str, int]], killed: set[int]) -> Reruns:
    """Split the reruns of one kind's jobs, from their (key, event, pid) notes, by cause."""
    starts: Counter[int] = Counter()
    failures: Counter[int] = Counter()
    starts_in_killed: Counter[int] = Counter()
    for key, event, pid in rows:
        if event == "start":
            starts[key] += 1
            starts_in_killed[key] += pid in killed
        elif event == "failed":
            failures[key] += 1
    split = Reruns()
    for key, n in starts.items():
        extra = n - 1
        after_failure = min(failures[key], extra)
        # The last attempt completed the job; it may have run in a process killed later.
        after_kill = min(starts_in_killed[key], extra - after_failure)
        split.after_failure += after_failure
        split.after_kill += after_kill
        split.without_cause += extra - after_failure - after_kill
        if extra - after_failure - after_kill:
            split.by_key[key] = extra - after_failure - after_kill
    return split


def count_in_logs(paths: Sequence[Path], pattern: str) -> int:
    """Count the lines of the worker logs at `paths` that match `pattern`."""
    regex = re.compile(pattern)
    return sum(
        1
        for path in paths
        if path.exists()
        for line in path.read_text(errors="replace").splitlines()
        if regex.search(line)
    )


def report(
    engine: Engine,
    args: argparse.Namespace,
    slots: Sequence[WorkerSlot],
    kills: int,
    wall_seconds: float,
    exit_codes: list[int | None],
) -> int:
    """Print the summary; return 1 if a job was lost, duplicated, or rerun without a cause."""
    total = args.jobs + args.long_jobs
    killed = set().union(*(slot.killed_pids for slot in slots))
    with engine.connect() as connection:
        left = {int(p["key"]) for p in connection.scalars(select(Job.payload))}
        dead = {int(p["key"]) for p in connection.scalars(select(DeadLetterJob.payload))}
        notes = connection.execute(
            select(attempts.c.kind, attempts.c.key, attempts.c.event, attempts.c.pid).order_by(
                attempts.c.id
            )
        ).all()
        app_counts: dict[int, int] = dict(
            connection.execute(select(app_rows.c.key, func.count()).group_by(app_rows.c.key)).all()
        )
    by_kind: dict[str, list[tuple[int, str, int]]] = {kind: [] for kind in KINDS}
    for kind, key, event, pid in notes:
        by_kind[kind].append((key, event, pid))
    started = {
        kind: {key for key, event, _ in rows if event == "start"} for kind, rows in by_kind.items()
    }
    # A job's row goes only when it ran to its end or was dead-lettered: once it is gone, an
    # attempt row (plain, long) or its app row (transactional) shows it completed.
    done = (started["plain"] | started["long"] | set(app_counts) | dead) - left
    lost = total - len(done & set(range(total)))
    app_duplicates = sum(n - 1 for n in app_counts.values() if n > 1)
    # A long job that ended in two processes never killed was run twice by live workers.
    ends_alive = Counter(
        key for key, event, pid in by_kind["long"] if event == "end" and pid not in killed
    )
    long_duplicates = sum(n - 1 for n in ends_alive.values() if n > 1)
    split = {kind: reruns(rows, killed) for kind, rows in by_kind.items()}
    exhausted = sum(1 for _, event, _ in by_kind["long"] if event == "exhausted")
    all_logs = [path for slot in slots for path in slot.log_paths]
    leases_lost = count_in_logs(all_logs, r"lease lost")
    refused = count_in_logs(slots[0].log_paths, r"too many connections for role")
    without_cause = sum(s.without_cause for s in split.values())

    print()
    print(f"jobs (+ long jobs of {args.long_seconds:g} s)      {args.jobs} + {args.long_jobs}")
    print(f"workers x concurrency              {args.workers} x {args.concurrency}")
    if args.limited_role_connections:
        print(f"worker 0's role CONNECTION LIMIT   {args.limited_role_connections}")
        print(f"  long jobs that used it up        {exhausted}")
        print(f"  worker 0 log lines refused       {refused}")
    print(f"kills (SIGKILL)                    {kills}")
    print(f"lost (neither done nor dead)       {lost}")
    print(f"duplicates (transactional app rows) {app_duplicates}")
    print(f"duplicates (long jobs ended twice) {long_duplicates}")
    for kind in KINDS:
        s = split[kind]
        print(
            f"reruns of {kind + ' jobs':<24} {s.total}  (after a kill {s.after_kill}, "
            f"after a failed attempt {s.after_failure}, without a cause {s.without_cause})"
        )
        if s.by_key:
            print(f"  rerun without a cause: keys {sorted(s.by_key)[:20]}")
    print(f"leases lost (worker log lines)     {leases_lost}")
    print(f"dead letters                       {len(dead)}")
    print(f"worker exit codes at SIGTERM       {exit_codes}")
    print(f"wall time                          {wall_seconds:.1f} s")
    return 1 if lost or app_duplicates or long_duplicates or without_cause else 0


if __name__ == "__main__":
    sys.exit(main())
