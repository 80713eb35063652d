"""Rows in every state for the dashboard's tests, and helpers to read its pages and forms."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sqla_jobs.models import DeadLetterJob, Job, MinuteCount, PeriodicSlot, WorkerRecord

SECRET_PAYLOAD = "payload-secret-4f1c"
"""A value every payload made here holds: a page that shows it has shown a payload."""

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "app/tasks.py", line 12, in run\n'
    "    raise ConnectionError('smtp down')\n"
    "ConnectionError: smtp down\n"
)


def now() -> datetime:
    return datetime.now(UTC)


def add_job(
    engine: Engine,
    *,
    name: str = "send_email",
    queue: str = "default",
    state: str = "due",
    age: timedelta = timedelta(minutes=1),
) -> uuid.UUID:
    """Insert a job in `state` (due, scheduled, retrying, running), created `age` ago."""
    created = now() - age
    fields: dict[str, Any] = {"run_at": created}
    if state == "scheduled":
        fields["run_at"] = now() + timedelta(hours=1)
    elif state == "retrying":
        fields.update(
            run_at=now() + timedelta(minutes=5),
            error_count=2,
            last_error_message=TRACEBACK,
            last_failed_at=now(),
        )
    elif state == "running":
        fields.update(locked_by="worker-1", locked_at=now())
    job = Job(
        name=name,
        queue=queue,
        payload={"to": SECRET_PAYLOAD},
        created_at=created,
        context="signup",
        **fields,
    )
    with Session(engine) as session:
        session.add(job)
        session.commit()
        return job.id


def add_dead_letter(
    engine: Engine,
    *,
    name: str = "send_email",
    queue: str = "default",
    failed_ago: timedelta = timedelta(minutes=1),
) -> uuid.UUID:
    """Insert a dead letter that failed `failed_ago`, with a traceback as its last error."""
    dead = DeadLetterJob(
        original_job_id=uuid.uuid4(),
        name=name,
        payload={"to": SECRET_PAYLOAD},
        queue=queue,
        priority=0,
        context="signup",
        error_count=3,
        last_error_message=TRACEBACK,
        created_at=now() - failed_ago - timedelta(minutes=10),
        failed_at=now() - failed_ago,
    )
    with Session(engine) as session:
        session.add(dead)
        session.commit()
        return dead.id


def add_dead_letters(engine: Engine, count: int, **options: Any) -> list[uuid.UUID]:
    """Insert `count` dead letters in one transaction; return their ids."""
    rows = [
        DeadLetterJob(
            original_job_id=uuid.uuid4(),
            name=options.get("name", "send_email"),
            payload={"to": SECRET_PAYLOAD},
            queue=options.get("queue", "default"),
            priority=0,
            context="",
            error_count=1,
            last_error_message=TRACEBACK,
            created_at=now() - timedelta(hours=1),
            failed_at=now() - timedelta(minutes=30, seconds=index),
        )
        for index in range(count)
    ]
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows]


def add_worker(engine: Engine, worker_id: str = "worker-1", *, silent_for: timedelta) -> None:
    """Register a worker whose last heartbeat was `silent_for` ago."""
    with Session(engine) as session:
        session.add(
            WorkerRecord(
                id=worker_id,
                hostname="host-a",
                pid=4242,
                queues=["default", "mail"],
                started_at=now() - timedelta(hours=1),
                heartbeat_at=now() - silent_for,
            )
        )
        session.commit()


def add_slot(engine: Engine, schedule: str, slot_at: datetime) -> None:
    """Record that `schedule`'s slot `slot_at` was enqueued."""
    with Session(engine) as session:
        session.add(PeriodicSlot(schedule=schedule, slot_at=slot_at, job_id=uuid.uuid4()))
        session.commit()


def count_rows(engine: Engine, model: type[Job] | type[DeadLetterJob]) -> int:
    with Session(engine) as session:
        return session.query(model).count()


def csrf_token(html: str) -> str:
    """Return the CSRF token of the first form of a page."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(html: str) -> list[list[str]]:
    """Return the text of each table cell of a page, row by row (header rows included)."""
    parser = _Tables()
    parser.feed(html)
    return parser.rows


def row_of(html: str, first_cell: str) -> list[str]:
    """Return the cells of the one table row whose first cell (or second) is `first_cell`."""
    rows = [row for row in table_rows(html) if first_cell in row[:2]]
    assert len(rows) == 1, f"{len(rows)} rows start with {first_cell!r}"
    return rows[0]


def add_minute_count(
    engine: Engine, *, minutes_ago: int, queue: str, outcome: str, count: int
) -> None:
    """Record that `count` jobs of `queue` ended with `outcome` in a minute `minutes_ago` ago."""
    minute = (now() - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    with Session(engine) as session:
        session.add(
            MinuteCount(
                minute=minute,
                queue=queue,
                name="send_email",
                outcome=outcome,
                count=count,
                duration_seconds=0.5 * count,
            )
        )
        session.commit()
