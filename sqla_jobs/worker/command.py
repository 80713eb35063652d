"""``python -m sqla_jobs.worker``: run a worker (or a supervisor of several) from settings.

Flags override settings (``SQLA_JOBS_*`` and `.env`); everything is validated, the task modules
imported and the queues resolved before any process, engine or connection is made.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
from loguru import logger

from sqla_jobs import log
from sqla_jobs.click_run import run_command as run_command
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.settings import Settings
from sqla_jobs.supervisor import Supervisor
from sqla_jobs.tasks import Task, is_concrete
from sqla_jobs.urls import checked_url
from sqla_jobs.worker import Worker
from sqla_jobs.worker.preflight import StoppedWhileWaiting, check_database
from sqla_jobs.worker.scope import serve_queues, task_map
from sqla_jobs.worker.state import entered, load_factory
from sqla_jobs.worker_arguments import FLAGS as FLAGS
from sqla_jobs.worker_arguments import WorkerArguments as WorkerArguments
from sqla_jobs.worker_arguments import child_arguments as child_arguments
from sqla_jobs.worker_arguments import import_modules as import_modules
from sqla_jobs.worker_arguments import import_option, warn_if_default_database
from sqla_jobs.worker_arguments import settings_from as settings_from


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m sqla_jobs.worker") -> int:
    """Parse worker flags and run; return the exit code (0 clean, 1 failed, 2 bad usage)."""
    return run_command(worker, argv, prog=prog)


def parse_arguments(argv: Sequence[str]) -> WorkerArguments:
    """Return the worker flags in `argv`, parsed as the command parses them."""
    with worker.make_context("worker", list(argv)) as context:
        return WorkerArguments(**context.params)


@click.command(
    "worker",
    help="Run a worker (or, with --processes, a supervisor of several).",
    context_settings={"max_content_width": 100},
)
@import_option()
@click.option(
    "--queues",
    help="Comma-separated queues sharing --concurrency slots (mail,default), or each with slots "
    "of its own (mail=5,default=20); default: the queues of the tasks.",
)
@click.option("--concurrency", type=int, help="Jobs run at once.")
@click.option(
    "--queue-limits",
    help="At most this many jobs of a queue run at once on all workers (payments=2,mail=10); "
    "stored in the database when the worker starts.",
)
@click.option("--processes", type=int, help="Worker processes under one supervisor.")
@click.option("--database-url", help="Overrides SQLA_JOBS_DATABASE_URL.")
@click.option(
    "--state", help="module:factory whose result jobs see as ctx.state (e.g. myapp.jobs:state)."
)
@click.option("--log-level", help="TRACE, DEBUG, INFO, WARNING, ERROR.")
@click.option("--log-json", is_flag=True, default=None, help="JSON log lines.")
@click.option(
    "--metrics-port",
    type=int,
    help="Serve Prometheus metrics on this port at /metrics (needs sqla_jobs[metrics]).",
)
# Given by the supervisor to the worker processes it starts (see `sqla_jobs.worker.signals`).
@click.option("--supervisor-pid", type=int, hidden=True)
def worker(**flags: Any) -> None:
    """Run the worker the flags describe; exit with its status."""
    click.get_current_context().exit(run(WorkerArguments(**flags)))


def run(args: WorkerArguments) -> int:
    """Run the worker the parsed `args` describe."""
    try:
        settings = settings_from(args)
        url = checked_url(settings.database_url.get_secret_value())
        if settings.processes > 1 and settings.metrics_port is not None:
            raise ConfigurationError(
                "metrics_port serves one process: with processes > 1, run the workers apart, "
                "each with a port of its own"
            )
    except ConfigurationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    log.configure(settings)
    warn_if_default_database(url, args.database_url)
    try:
        import_modules([*settings.imports, *args.imports])
        tasks = served_tasks(settings)
        factory = load_factory(settings.state) if settings.state else None
    except ConfigurationError as exc:
        logger.error("cannot start the worker", error=str(exc))
        return 2
    try:
        check_database(url, startup_timeout=settings.startup_timeout)
    except ConfigurationError as exc:
        logger.error("cannot start the worker", error=str(exc))
        return 1
    except StoppedWhileWaiting:
        logger.info("signal received while waiting for the database; not starting")
        return 0
    if settings.processes > 1:
        command = [sys.executable, "-m", "sqla_jobs.worker", *child_arguments(args)]
        return Supervisor(command, settings.processes).run()
    return _run_one(settings, tasks, factory, supervisor_pid=args.supervisor_pid)


def _run_one(
    settings: Settings,
    tasks: Mapping[str, type[Task]],
    factory: Callable[[], Any] | None,
    *,
    supervisor_pid: int | None,
) -> int:
    worker: Worker | None = None

    async def serve() -> None:
        nonlocal worker
        async with entered(factory) as state:
            worker = Worker.from_settings(settings, tasks=tasks.values(), state=state)
            worker.supervisor_pid = supervisor_pid
            await worker.run()

    failed = False
    try:
        asyncio.run(serve())
    except ConfigurationError as exc:
        logger.error("the worker stopped", error=str(exc))
        failed = True
    code = 1 if worker is None or failed else worker.exit_code
    if _job_threads_alive():
        # A sync job outlived the shutdown; joining its thread at exit would hang the process.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def served_tasks(settings: Settings) -> Mapping[str, type[Task]]:
    """Return the registered tasks, checking that the worker has something to run.

    Names Task classes that lack `run()`, and warns about `--queues` no task uses.
    """
    tasks = task_map(None)
    if not tasks:
        abstract = [
            f"{cls.__module__}.{cls.__qualname__}"
            for cls in _all_subclasses(Task)
            if not is_concrete(cls) and not cls.__module__.startswith("sqla_jobs")
        ]
        hint = (
            f": {', '.join(abstract)} do(es) not implement run()"
            if abstract
            else (": import the modules that define them with --import")
        )
        raise ConfigurationError(f"no task to run{hint}")
    used = {task.__task_options__.queue for task in tasks.values()}
    for queue in settings.queue_names:
        if queue not in used:
            logger.warning(
                "no imported task uses this queue; its jobs will run only if their task is known",
                queue=queue,
                task_queues=sorted(used),
            )
    serve_queues(settings.queue_names or None, tasks)
    return tasks


def _job_threads_alive() -> bool:
    return any(t.name.startswith("sqla_jobs") and t.is_alive() for t in threading.enumerate())


def _all_subclasses(cls: type[Task]) -> list[type[Task]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found
