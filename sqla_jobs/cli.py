"""Command line: argument parsing only; the work is done by the modules it calls.

``python -m sqla_jobs.worker --import myapp.tasks`` runs a worker;
``python -m sqla_jobs migrate`` applies the shipped migrations.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from loguru import logger
from pydantic import ValidationError

from . import log
from .errors import ConfigurationError
from .settings import Settings
from .supervisor import Supervisor
from .worker import Worker


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m sqla_jobs <command>``."""
    parser = argparse.ArgumentParser(prog="python -m sqla_jobs")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="apply sqla_jobs' migrations to the database")
    migrate.add_argument("--database-url", help="overrides SQLA_JOBS_DATABASE_URL")
    migrate.add_argument("--revision", default="heads", help="target revision (default: heads)")
    worker = commands.add_parser("worker", help="run a worker (same as python -m sqla_jobs.worker)")
    _add_worker_arguments(worker)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return _migrate(args)
    return _run_worker(args)


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m sqla_jobs.worker``."""
    parser = argparse.ArgumentParser(
        prog="python -m sqla_jobs.worker", description="Run a sqla_jobs worker."
    )
    _add_worker_arguments(parser)
    return _run_worker(parser.parse_args(argv))


def _add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE so its tasks register (repeatable)",
    )
    parser.add_argument("--queues", help="comma-separated queues (default: those of the tasks)")
    parser.add_argument("--concurrency", type=int, help="jobs run at once")
    parser.add_argument(
        "--processes", type=_at_least_one, help="worker processes under one supervisor (default 1)"
    )
    parser.add_argument("--database-url", help="overrides SQLA_JOBS_DATABASE_URL")
    parser.add_argument("--log-level", help="TRACE, DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")


def _settings(args: argparse.Namespace, fields: Sequence[str]) -> Settings:
    # Flags override the environment: pydantic-settings ranks init arguments first.
    overrides: dict[str, Any] = {
        field: getattr(args, field) for field in fields if getattr(args, field, None) is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SystemExit(f"invalid settings:\n{exc}") from exc


def _migrate(args: argparse.Namespace) -> int:
    from .migrate import upgrade

    settings = _settings(args, ["database_url"])
    log.configure(settings)
    upgrade(settings.database_url.get_secret_value(), args.revision)
    return 0


def _run_worker(args: argparse.Namespace) -> int:
    settings = _settings(
        args, ["queues", "concurrency", "processes", "database_url", "log_level", "log_json"]
    )
    log.configure(settings)
    try:
        _import_all([*settings.imports, *args.imports])
        worker = Worker(
            settings.database_url.get_secret_value(),
            queues=settings.queues or None,
            concurrency=settings.concurrency,
            poll_interval=settings.poll_interval,
            lock_timeout=settings.lock_timeout,
            shutdown_timeout=settings.shutdown_timeout,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            max_retries=settings.max_retries,
        )
    except ConfigurationError as exc:
        logger.error("cannot start the worker", error=str(exc))
        return 2
    if settings.processes > 1:
        # Imports and options were checked above, once: a mistake is one clear error here
        # rather than children that fail and are restarted forever.
        command = [sys.executable, "-m", "sqla_jobs.worker", *_child_arguments(args)]
        return Supervisor(command, settings.processes).run()
    asyncio.run(worker.run())
    code = 1 if worker.was_forced else 0
    if _job_threads_alive():
        # A sync job outlived the shutdown; joining its thread at exit would hang the process.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _child_arguments(args: argparse.Namespace) -> list[str]:
    """Return the flags for one supervised worker process: the same options, one process."""
    argv = [flag for module in args.imports for flag in ("--import", module)]
    for option in ("queues", "concurrency", "database_url", "log_level"):
        if (value := getattr(args, option)) is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    if args.log_json:
        argv.append("--log-json")
    # Explicit, so SQLA_JOBS_PROCESSES in the inherited environment or .env cannot make each
    # child a supervisor in turn.
    return [*argv, "--processes", "1"]


def _import_all(modules: Sequence[str]) -> None:
    # `python -m` puts the working directory on sys.path; a console script does not.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in dict.fromkeys(modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import {module!r}: {exc}") from exc


def _job_threads_alive() -> bool:
    return any(t.name.startswith("sqla_jobs") and t.is_alive() for t in threading.enumerate())
