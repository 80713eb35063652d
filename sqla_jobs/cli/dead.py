"""``sqla-jobs retry`` and ``purge``: dead letters back into the queue, or gone, in batches."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncSession

from sqla_jobs import admin

from .common import database_url_option, resolve_database, with_session
from .output import DURATION

Operation = Callable[..., Awaitable[int]]


def _dead_letter_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        (
            click.argument("ids", metavar="[ID]...", nargs=-1, type=click.UUID),
            click.option("--queue", help="Only dead letters of this queue."),
            click.option("--name", help="Only dead letters of this task."),
            click.option(
                "--older-than", type=DURATION, help="Only those that failed longer ago, e.g. 7d."
            ),
            click.option(
                "--batch-size",
                type=click.IntRange(1, 100_000),
                default=admin.DEFAULT_REDRIVE_BATCH_SIZE,
                show_default=True,
                help="Dead letters per transaction.",
            ),
            click.option("--limit", type=click.IntRange(0), help="At most this many in all."),
            click.option("--all", "everything", is_flag=True, help="Every dead letter."),
            database_url_option,
        )
    ):
        command = option(command)
    return command


@click.command("retry", short_help="Move dead letters back into the queue.")
@_dead_letter_filters
def retry_command(**options: Any) -> None:
    """Move dead letters (by ID, or all that match the filters) back into the queue.

    Each becomes a fresh job due now; a unique job whose key is taken again stays dead.
    """
    done = _run_batched(admin.retry_dead_letters, "retry", "retrying", yes=True, **options)
    click.echo(f"retried {done} dead letter(s)")


@click.command("purge", short_help="Delete dead letters.")
@_dead_letter_filters
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def purge_command(**options: Any) -> None:
    """Delete dead letters for good (by ID, or all that match the filters), in batches."""
    done = _run_batched(admin.delete_dead_letters, "delete", "deleting", **options)
    click.echo(f"deleted {done} dead letter(s)")


def _run_batched(
    operation: Operation,
    verb: str,
    label: str,
    *,
    ids: tuple[uuid.UUID, ...],
    queue: str | None,
    name: str | None,
    older_than: timedelta | None,
    batch_size: int,
    limit: int | None,
    everything: bool,
    yes: bool,
    database_url: str | None,
) -> int:
    # `is not None`: --older-than 0s (every dead letter so far) is a filter, though falsy.
    if not (ids or queue or name or older_than is not None or everything):
        raise click.UsageError(f"say which dead letters to {verb}: IDs, a filter, or --all")
    filters: dict[str, Any] = {"queue": queue, "name": name, "older_than": older_than}
    chosen = list(dict.fromkeys(ids)) or None
    url = resolve_database(database_url)

    async def count(session: AsyncSession) -> int:
        if chosen is not None:
            return len(chosen)
        return await admin.count_dead_letters(session, **filters)

    matching = with_session(url, count)
    total = matching if limit is None else min(matching, limit)
    if total == 0:
        return 0
    if not yes:
        click.confirm(f"Delete {total} dead letter(s) for good?", abort=True, err=True)

    async def run(session: AsyncSession) -> int:
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            return await operation(
                session,
                chosen,
                batch_size=batch_size,
                limit=limit,
                on_batch=bar.update,
                **filters,
            )

    return with_session(url, run)
