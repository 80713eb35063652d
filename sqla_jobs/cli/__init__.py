"""The ``sqla-jobs`` command line (also ``python -m sqla_jobs``): parsing and printing only.

The work is done by the modules below it: `sqla_jobs.worker` runs workers, `sqla_jobs.migrate`
migrates, `sqla_jobs.admin` reads and steers the queue (the same functions the dashboard
calls). Exit status: 0 done, 1 failed (one sentence on stderr), 2 bad usage or settings.

    sqla-jobs worker --import myapp.tasks
    sqla-jobs stats
    sqla-jobs retry --queue mail --older-than 1h
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from sqla_jobs.worker import command as worker_command

from .dead import purge_command, retry_command
from .jobs import cancel_command, enqueue_command, list_command, show_command
from .migrate import migrate_group
from .periodic import periodic_group
from .status import check_command, stats_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """Run sqla_jobs workers, migrate their schema, and operate the queue."""


for _command in (
    worker_command.worker,
    migrate_group,
    enqueue_command,
    list_command,
    show_command,
    stats_command,
    retry_command,
    cancel_command,
    purge_command,
    check_command,
    periodic_group,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sqla-jobs <command>``; return the exit status."""
    return worker_command.run_command(cli, argv, prog=None)


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m sqla_jobs.worker`` (the `worker` command on its own)."""
    return worker_command.main(argv)
