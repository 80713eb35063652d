"""How the testing helpers find the jobs a session sees, match them, and explain a mismatch."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sqla_jobs.models import Job
from sqla_jobs.tasks import Task, is_concrete

# A failure message lists at most this many jobs: enough to spot the near miss.
MAX_LISTED_JOBS = 20


@dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """A job of the task asked about, as the session sees it, with its decoded task."""

    id: uuid.UUID
    queue: str
    priority: int
    context: str
    task: Task | ValidationError
    """The payload validated as the task class, or why it does not validate."""
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Match:
    """What a job must be to match: its task class, task field values and job options."""

    task_class: type[Task]
    fields: Mapping[str, Any]
    options: Mapping[str, Any]

    @classmethod
    def of(
        cls,
        task_class: type[Task],
        fields: Mapping[str, Any] | None,
        field_values: Mapping[str, Any],
        queue: str | None,
        priority: int | None,
        context: str | None,
    ) -> Match:
        if not (isinstance(task_class, type) and issubclass(task_class, Task)):
            raise TypeError(f"expected a Task class, not {task_class!r}")
        if not is_concrete(task_class):
            raise TypeError(f"{task_class.__qualname__} does not implement run(): no job runs it")
        given = dict(fields or {})
        for name, value in field_values.items():
            if name in given:
                raise TypeError(f"field {name!r} is given twice")
            given[name] = value
        unknown = sorted(set(given) - set(task_class.model_fields))
        if unknown:
            raise TypeError(
                f"{task_class.__qualname__} has no field {', '.join(map(repr, unknown))} "
                f"(its fields: {', '.join(task_class.model_fields) or 'none'})"
            )
        options = {"queue": queue, "priority": priority, "context": context}
        return cls(
            task_class, given, {name: value for name, value in options.items() if value is not None}
        )

    @property
    def name(self) -> str:
        return self.task_class.__task_options__.name

    def matches(self, job: EnqueuedJob) -> bool:
        return not self.differences(job)

    def differences(self, job: EnqueuedJob) -> list[str]:
        """Say how `job` differs from what is asked, e.g. ``to='b@x' (expected 'a@x')``."""
        found: list[str] = []
        for name, expected in self.options.items():
            actual = getattr(job, name)
            if actual != expected:
                found.append(f"{name}={actual!r} (expected {expected!r})")
        for name, expected in self.fields.items():
            if isinstance(job.task, ValidationError):
                found.append("payload does not validate")
                break
            actual = getattr(job.task, name)
            if actual != expected:
                found.append(f"{name}={actual!r} (expected {expected!r})")
        return found

    def describe(self) -> str:
        """Say what is asked, e.g. ``SendEmail ('send_email') with to='a@x', queue='mail'``."""
        criteria = [f"{name}={value!r}" for name, value in {**self.fields, **self.options}.items()]
        where = f" with {', '.join(criteria)}" if criteria else ""
        return f"{self.task_class.__qualname__} ({self.name!r}){where}"


@dataclass(frozen=True, slots=True)
class Seen:
    """The jobs of the task asked about that a session sees; if none, the other tasks' counts."""

    jobs: list[EnqueuedJob]
    others: Counter[str]


def look(session: Session, task_class: type[Task]) -> Seen:
    """Return every job of `task_class` that `session` sees, each once."""
    name = task_class.__task_options__.name
    # Executing through the session autoflushes it, so pending jobs are written (and then read)
    # inside its transaction; uncommitted and committed rows come back alike.
    rows = session.execute(
        select(Job.id, Job.queue, Job.priority, Job.context, Job.payload)
        .where(Job.name == name)
        .order_by(Job.created_at)
    ).all()
    found = [(row.id, row.queue, row.priority, row.context, row.payload) for row in rows]
    seen = {row.id for row in rows}
    # Read after the query: what is still pending was added with autoflush off.
    for job in session.new:
        if isinstance(job, Job) and job.name == name and job.id not in seen:
            queue = "default" if job.queue is None else job.queue
            priority = 0 if job.priority is None else job.priority
            found.append((job.id, queue, priority, job.context or "", job.payload))
    jobs = [
        EnqueuedJob(
            id=job_id,
            queue=queue,
            priority=priority,
            context=context,
            task=decode(task_class, payload),
            payload=payload,
        )
        for job_id, queue, priority, context, payload in found
    ]
    # Only when there is nothing to list: a failure message then says what was enqueued instead.
    return Seen(jobs, Counter() if jobs else other_jobs(session, name))


def decode(task_class: type[Task], payload: Mapping[str, Any]) -> Task | ValidationError:
    try:
        return task_class.model_validate(payload)
    except ValidationError as exc:
        return exc


def other_jobs(session: Session, name: str) -> Counter[str]:
    """Count the jobs of tasks other than `name` that `session` sees, by task name."""
    rows = session.execute(
        select(Job.name, func.count()).where(Job.name != name).group_by(Job.name)
    ).all()
    counts = Counter({row[0]: row[1] for row in rows})
    for job in session.new:
        if isinstance(job, Job) and job.name != name:
            counts[job.name] += 1
    return counts


def fail(headline: str, match: Match, seen: Seen) -> None:
    __tracebackhide__ = True
    lines = [f"{headline}."]
    if seen.jobs:
        lines.append(f"Enqueued {match.task_class.__qualname__} jobs ({len(seen.jobs)}):")
        for job in seen.jobs[:MAX_LISTED_JOBS]:
            differences = match.differences(job)
            verdict = f"differs: {'; '.join(differences)}" if differences else "matches"
            lines.append(f"  - {show(job)}")
            lines.append(f"      {verdict}")
        if len(seen.jobs) > MAX_LISTED_JOBS:
            lines.append(f"  … and {len(seen.jobs) - MAX_LISTED_JOBS} more")
    else:
        others = ", ".join(f"{name!r} x{count}" for name, count in sorted(seen.others.items()))
        lines.append(f"No {match.name!r} jobs are enqueued; other jobs: {others or 'none'}.")
    raise AssertionError("\n".join(lines))


def show(job: EnqueuedJob) -> str:
    task = (
        f"<payload {dict(job.payload)!r} does not validate>"
        if isinstance(job.task, ValidationError)
        else repr(job.task)
    )
    return f"{task} queue={job.queue!r} priority={job.priority} context={job.context!r}"
