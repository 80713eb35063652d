"""The ``sqla-jobs`` command line (also ``python -m sqla_jobs``): parsing and printing only.

The work is done by the modules below it: `sqla_jobs.worker` runs workers, `sqla_jobs.migrate`
migrates, `sqla_jobs.admin` reads and steers the queue (the same functions the dashboard
calls). Exit status: 0 done, 1 failed (one sentence on stderr), 2 bad usage or settings.

    sqla-jobs worker --import myapp.tasks
    sqla-jobs stats
    sqla-jobs retry --queue mail --older-than 1h
    sqla-jobs dashboard --port 8080
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from sqla_jobs.click_run import run_command

from .lazy import LazyCommand, LazyGroup

# Each command's module is imported only when the command runs: the worker brings the store and
# Alembic, the queue commands the admin API. The help lines are the commands' own (a test checks).
COMMANDS = {
    "worker": LazyCommand(
        "sqla_jobs.worker.command:worker",
        "Run a worker (or, with --processes, a supervisor of several).",
    ),
    "migrate": LazyCommand(
        "sqla_jobs.cli.migrate:migrate_group", "Apply or inspect the schema migrations."
    ),
    "enqueue": LazyCommand(
        "sqla_jobs.cli.jobs:enqueue_command", "Enqueue a job of a registered task."
    ),
    "list": LazyCommand("sqla_jobs.cli.jobs:list_command", "List jobs or dead letters."),
    "show": LazyCommand("sqla_jobs.cli.jobs:show_command", "Show one job or dead letter in full."),
    "cancel": LazyCommand("sqla_jobs.cli.jobs:cancel_command", "Cancel jobs."),
    "stats": LazyCommand(
        "sqla_jobs.cli.status:stats_command", "Show jobs per queue and state, and the workers."
    ),
    "check": LazyCommand(
        "sqla_jobs.cli.status:check_command", "Check the database, the schema and the workers."
    ),
    "retry": LazyCommand(
        "sqla_jobs.cli.dead:retry_command", "Move dead letters back into the queue."
    ),
    "purge": LazyCommand("sqla_jobs.cli.dead:purge_command", "Delete dead letters."),
    "periodic": LazyCommand("sqla_jobs.cli.periodic:periodic_group", "Inspect periodic schedules."),
    "dashboard": LazyCommand(
        "sqla_jobs.cli.dashboard:dashboard_command", "Serve the web dashboard until interrupted."
    ),
}


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def cli() -> None:
    """Run sqla_jobs workers, migrate their schema, and operate the queue."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sqla-jobs <command>``; return the exit status."""
    return run_command(cli, argv, prog=None)


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m sqla_jobs.worker`` (the `worker` command on its own)."""
    from sqla_jobs.worker import command as worker_command

    return worker_command.main(argv)
