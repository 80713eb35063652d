"""``python -m sqla_jobs.worker``: run a worker (or a supervisor of several) from settings.

Flags override settings (``SQLA_JOBS_*`` and `.env`); everything is validated, the task modules
imported and the queues resolved before any process, engine or connection is made.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loguru import logger
from pydantic import ValidationError

from sqla_jobs import log
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.settings import Settings
from sqla_jobs.supervisor import Supervisor
from sqla_jobs.tasks import Task, is_concrete
from sqla_jobs.urls import checked_url, display_url
from sqla_jobs.worker import Worker
from sqla_jobs.worker.preflight import StoppedWhileWaiting, check_database
from sqla_jobs.worker.scope import serve_queues, task_map
from sqla_jobs.worker.state import entered, load_factory
from sqla_jobs.worker_options import describe_errors

FLAGS = (
    "queues",
    "concurrency",
    "queue_limits",
    "processes",
    "database_url",
    "state",
    "log_level",
    "log_json",
)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m sqla_jobs.worker") -> int:
    """Parse worker flags and run; return the exit code (0 clean, 1 failed, 2 bad usage)."""
    parser = argparse.ArgumentParser(prog=prog, description="Run a sqla_jobs worker.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the worker's flags to `parser`."""
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE so its tasks register (repeatable)",
    )
    parser.add_argument(
        "--queues",
        help="comma-separated queues sharing --concurrency slots (mail,default), or each with "
        "slots of its own (mail=5,default=20); default: the queues of the tasks",
    )
    parser.add_argument("--concurrency", type=int, help="jobs run at once")
    parser.add_argument(
        "--queue-limits",
        help="at most this many jobs of a queue run at once on all workers (payments=2,mail=10); "
        "stored in the database when the worker starts",
    )
    parser.add_argument("--processes", type=int, help="worker processes under one supervisor")
    parser.add_argument("--database-url", help="overrides SQLA_JOBS_DATABASE_URL")
    parser.add_argument(
        "--state", help="module:factory whose result jobs see as ctx.state (e.g. myapp.jobs:state)"
    )
    parser.add_argument("--log-level", help="TRACE, DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    # Given by the supervisor to the worker processes it starts (see `sqla_jobs.worker.signals`).
    parser.add_argument("--supervisor-pid", type=int, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Run the worker the parsed `args` describe."""
    try:
        settings = settings_from(args)
        url = checked_url(settings.database_url.get_secret_value())
    except ConfigurationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    log.configure(settings)
    if not _database_was_given(args):
        logger.warning(
            "no database configured (SQLA_JOBS_DATABASE_URL or --database-url): using the "
            "SQLite default",
            database=display_url(url),
            path=os.path.abspath(url.database or ""),
        )
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
    return _run_one(settings, tasks, factory, supervisor_pid=getattr(args, "supervisor_pid", None))


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

    try:
        asyncio.run(serve())
    except ConfigurationError as exc:
        logger.error("the worker stopped", error=str(exc))
    code = 1 if worker is None else worker.exit_code
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


def settings_from(args: argparse.Namespace) -> Settings:
    """Return the settings, flags overriding the environment; `ConfigurationError` if invalid."""
    # pydantic-settings ranks init arguments above the environment.
    overrides: dict[str, Any] = {
        field: getattr(args, field) for field in FLAGS if getattr(args, field, None) is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_errors(exc)) from None


def child_arguments(args: argparse.Namespace) -> list[str]:
    """Return the flags for one supervised worker process: the same options, one process."""
    argv = [flag for module in args.imports for flag in ("--import", module)]
    for option in ("queues", "concurrency", "queue_limits", "database_url", "state", "log_level"):
        if (value := getattr(args, option)) is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    if args.log_json:
        argv.append("--log-json")
    # Explicit, so SQLA_JOBS_PROCESSES in the inherited environment or .env cannot make each
    # child a supervisor in turn. The supervisor runs in this process.
    return [*argv, "--processes", "1", "--supervisor-pid", str(os.getpid())]


def import_modules(modules: Sequence[str]) -> None:
    """Import each module so its Task classes register; `ConfigurationError` if one fails."""
    # `python -m` puts the working directory on sys.path; a console script does not.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in dict.fromkeys(modules):
        if module.endswith(".py") or "/" in module:
            dotted = module.removesuffix(".py").strip("/").replace("/", ".")
            raise ConfigurationError(
                f"--import takes a module name, not a file path: try --import {dotted}"
            )
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import {module!r}: {exc}") from exc


def _job_threads_alive() -> bool:
    return any(t.name.startswith("sqla_jobs") and t.is_alive() for t in threading.enumerate())


def _all_subclasses(cls: type[Task]) -> list[type[Task]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def _database_was_given(args: argparse.Namespace) -> bool:
    if getattr(args, "database_url", None):
        return True
    # pydantic-settings reads the variable and the .env file; either counts as configured.
    return "SQLA_JOBS_DATABASE_URL" in os.environ or _dotenv_names_database()


def _dotenv_names_database() -> bool:
    try:
        with open(".env", encoding="utf-8") as dotenv:
            return any(line.strip().startswith("SQLA_JOBS_DATABASE_URL") for line in dotenv)
    except OSError:
        return False
