"""The worker command's flags, the settings they override (flags over ``SQLA_JOBS_*``), and the
modules ``--import`` names.

Shared by ``sqla-jobs worker`` and the operators' commands, which resolve the database the
same way and warn alike when none was configured. Outside the `sqla_jobs.worker` package, so that
those commands start without loading the worker and the store.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from loguru import logger
from pydantic import ValidationError
from sqlalchemy.engine import URL

from sqla_jobs.errors import ConfigurationError
from sqla_jobs.settings import Settings
from sqla_jobs.urls import display_url
from sqla_jobs.worker_options import describe_errors

_Command = TypeVar("_Command", bound=Callable[..., Any])

FLAGS = (
    "queues",
    "concurrency",
    "queue_limits",
    "processes",
    "database_url",
    "state",
    "log_level",
    "log_json",
    "metrics_port",
)


@dataclass(frozen=True)
class WorkerArguments:
    """The worker command's flags; None where a flag was not given (the settings decide)."""

    imports: tuple[str, ...] = ()
    queues: str | None = None
    concurrency: int | None = None
    queue_limits: str | None = None
    processes: int | None = None
    database_url: str | None = None
    state: str | None = None
    log_level: str | None = None
    log_json: bool | None = None
    metrics_port: int | None = None
    supervisor_pid: int | None = None


def settings_from(args: WorkerArguments) -> Settings:
    """Return the settings, flags overriding the environment; `ConfigurationError` if invalid."""
    # pydantic-settings ranks init arguments above the environment.
    overrides: dict[str, Any] = {
        field: getattr(args, field) for field in FLAGS if getattr(args, field, None) is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_errors(exc)) from None


def child_arguments(args: WorkerArguments) -> list[str]:
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


def warn_if_default_database(url: URL, url_flag: str | None) -> None:
    """Warn that the SQLite default is used when no database was configured at all."""
    if not database_was_given(url_flag):
        logger.warning(
            "no database configured (SQLA_JOBS_DATABASE_URL or --database-url): using the "
            "SQLite default",
            database=display_url(url),
            path=os.path.abspath(url.database or ""),
        )


def database_was_given(url_flag: str | None) -> bool:
    """Tell whether a database was configured: by flag, environment variable or `.env`."""
    if url_flag:
        return True
    # pydantic-settings reads the variable and the .env file; either counts as configured.
    return "SQLA_JOBS_DATABASE_URL" in os.environ or _dotenv_names_database()


def _dotenv_names_database() -> bool:
    try:
        with open(".env", encoding="utf-8") as dotenv:
            return any(line.strip().startswith("SQLA_JOBS_DATABASE_URL") for line in dotenv)
    except OSError:
        return False


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


def import_option(
    help: str = "Import MODULE so its tasks register (repeatable).",
) -> Callable[[_Command], _Command]:
    """Return the repeatable ``--import MODULE`` option (its values: ``imports``), which
    `import_modules` imports; `help` says what the command imports the modules for."""
    return click.option("--import", "imports", multiple=True, metavar="MODULE", help=help)
