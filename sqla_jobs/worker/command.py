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
from collections.abc import Sequence
from typing import Any

from loguru import logger
from pydantic import ValidationError

from sqla_jobs import log
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.settings import Settings
from sqla_jobs.supervisor import Supervisor
from sqla_jobs.worker import Worker
from sqla_jobs.worker.scope import serve_queues, task_map
from sqla_jobs.worker_options import describe_errors

FLAGS = ("queues", "concurrency", "processes", "database_url", "log_level", "log_json")


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
    parser.add_argument("--queues", help="comma-separated queues (default: those of the tasks)")
    parser.add_argument("--concurrency", type=int, help="jobs run at once")
    parser.add_argument("--processes", type=int, help="worker processes under one supervisor")
    parser.add_argument("--database-url", help="overrides SQLA_JOBS_DATABASE_URL")
    parser.add_argument("--log-level", help="TRACE, DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")


def run(args: argparse.Namespace) -> int:
    """Run the worker the parsed `args` describe."""
    try:
        settings = settings_from(args)
    except ConfigurationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    log.configure(settings)
    try:
        import_modules([*settings.imports, *args.imports])
        # Checked here, once, without an engine: a mistake is one clear error rather than
        # children that fail and are restarted forever.
        serve_queues(settings.queues or None, task_map(None))
    except ConfigurationError as exc:
        logger.error("cannot start the worker", error=str(exc))
        return 2
    if settings.processes > 1:
        command = [sys.executable, "-m", "sqla_jobs.worker", *child_arguments(args)]
        return Supervisor(command, settings.processes).run()
    worker = Worker.from_settings(settings)
    try:
        asyncio.run(worker.run())
    except ConfigurationError as exc:
        logger.error("the worker stopped", error=str(exc))
    code = worker.exit_code
    if _job_threads_alive():
        # A sync job outlived the shutdown; joining its thread at exit would hang the process.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


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
    for option in ("queues", "concurrency", "database_url", "log_level"):
        if (value := getattr(args, option)) is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    if args.log_json:
        argv.append("--log-json")
    # Explicit, so SQLA_JOBS_PROCESSES in the inherited environment or .env cannot make each
    # child a supervisor in turn.
    return [*argv, "--processes", "1"]


def import_modules(modules: Sequence[str]) -> None:
    """Import each module so its Task classes register; `ConfigurationError` if one fails."""
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
