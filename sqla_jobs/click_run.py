"""Run a click command as a function that returns the process exit status.

Shared by ``sqla-jobs`` and ``python -m sqla_jobs.worker``; it imports click only, so the command
line can start without loading the worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import click


def run_command(command: click.Command, argv: Sequence[str] | None, *, prog: str | None) -> int:
    """Run a click `command` on `argv`; return its exit code instead of exiting the process.

    Usage errors print click's message and give 2; a `click.ClickException` prints its one
    sentence and gives its code (1); ``--help`` gives 0.
    """
    try:
        result = command.main(
            args=list(argv) if argv is not None else None,
            prog_name=prog,
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0
