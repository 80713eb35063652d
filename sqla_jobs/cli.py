"""Command line: argument parsing only; the work is done by the modules it calls.

``python -m sqla_jobs worker --import myapp.tasks`` (or ``python -m sqla_jobs.worker``) runs a
worker; ``python -m sqla_jobs migrate`` applies the shipped migrations; ``python -m sqla_jobs
periodic list --import myapp.tasks`` lists the periodic schedules and their next run times.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from . import log
from .errors import ConfigurationError
from .periodic_listing import format_schedules, registered_schedules
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
    periodic = commands.add_parser("periodic", help="inspect periodic schedules")
    periodic_commands = periodic.add_subparsers(dest="periodic_command", required=True)
    periodic_list = periodic_commands.add_parser(
        "list", help="show each schedule and its next run times"
    )
    periodic_list.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE so its schedules register (repeatable)",
    )
    periodic_list.add_argument(
        "--count", type=int, default=5, help="run times shown per schedule (default: 5)"
    )
    _add_dashboard_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "dashboard":
        return _dashboard(args)
    if args.command == "migrate":
        return _migrate(args)
    if args.command == "periodic":
        return _list_periodic(args)
    return worker_command.run(args)


def _add_dashboard_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboard = commands.add_parser(
        "dashboard", help="serve the web dashboard (needs sqla_jobs[dashboard])"
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080, help="default: 8080")
    dashboard.add_argument("--database-url", help="overrides SQLA_JOBS_DATABASE_URL")
    dashboard.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE so its periodic schedules show (repeatable)",
    )
    dashboard.add_argument(
        "--read-only", action="store_true", default=None, help="show, never change"
    )
    dashboard.add_argument(
        "--hide-payloads", action="store_true", default=None, help="never show job payloads"
    )
    dashboard.add_argument("--root-path", default="", help="the path a proxy serves it under")
    dashboard.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without credentials (only on a loopback address)",
    )


def _dashboard(args: argparse.Namespace) -> int:
    try:
        from .dashboard.command import ServeOptions, run
    except ImportError as exc:
        print(f"the dashboard needs its extra: pip install 'sqla_jobs[dashboard]' ({exc})")
        return 1
    options = ServeOptions(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        imports=tuple(args.imports),
        read_only=args.read_only,
        hide_payloads=args.hide_payloads,
        insecure_no_auth=args.insecure_no_auth,
        root_path=args.root_path,
    )
    return run(options)


def _list_periodic(args: argparse.Namespace) -> int:
    if args.count < 1:
        print("--count must be at least 1", file=sys.stderr)
        return 2
    try:
        worker_command.import_modules(args.imports)
    except ConfigurationError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    schedules = list(registered_schedules().values())
    print(format_schedules(schedules, now=datetime.now(UTC), count=args.count), end="")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from .migrate import run_migrate_command

    try:
        settings = worker_command.settings_from(args)
    except ConfigurationError as exc:
        parser_error = f"invalid settings: {exc}"
        raise SystemExit(parser_error) from None
    log.configure(settings)
    return run_migrate_command(settings.database_url.get_secret_value(), args.revision)


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m sqla_jobs.worker`` (the `worker` command on its own)."""
    return worker_command.main(argv)
