"""Command line: argument parsing only; the work is done by the modules it calls.

``python -m sqla_jobs worker --import myapp.tasks`` (or ``python -m sqla_jobs.worker``) runs a
worker; ``python -m sqla_jobs migrate`` applies the shipped migrations.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import log
from .errors import ConfigurationError
from .worker import command as worker_command


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m sqla_jobs <command>``."""
    parser = argparse.ArgumentParser(prog="python -m sqla_jobs")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="apply sqla_jobs' migrations to the database")
    migrate.add_argument("--database-url", help="overrides SQLA_JOBS_DATABASE_URL")
    migrate.add_argument("--revision", default="heads", help="target revision (default: heads)")
    worker = commands.add_parser("worker", help="run a worker (same as python -m sqla_jobs.worker)")
    worker_command.add_arguments(worker)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return _migrate(args)
    return worker_command.run(args)


def _migrate(args: argparse.Namespace) -> int:
    from .migrate import upgrade

    try:
        settings = worker_command.settings_from(args)
    except ConfigurationError as exc:
        parser_error = f"invalid settings: {exc}"
        raise SystemExit(parser_error) from None
    log.configure(settings)
    upgrade(settings.database_url.get_secret_value(), args.revision)
    return 0


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m sqla_jobs.worker`` (the `worker` command on its own)."""
    return worker_command.main(argv)
