"""What a running job sees: the claimed row (`ClaimedJob`) and the `JobContext` given to `run`."""

from __future__ import annotations

import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .errors import TransactionUsageError
from .transaction import JobTransaction, TransactionBinding

CLAIMED_NAMES = (
    "id",
    "name",
    "payload",
    "queue",
    "priority",
    "run_at",
    "created_at",
    "context",
    "error_count",
    "timeout_seconds",
    "snooze_count",
    "trace_context",
)
"""The columns a claim returns (`sqla_jobs.dialects.claim.CLAIMED_COLUMNS`), by name."""

UNREADABLE_TIME = datetime.min.replace(tzinfo=UTC)
"""Stands for a stored time the worker could not read (the row's `problem` says which)."""


class ClaimedJob(NamedTuple):
    """A job row as a worker claimed it: read once, never written back through this object.

    The payload stays JSON text until the job runs: a row whose payload or times cannot be
    decoded is a failed attempt of that row (`problem`), never an error of the whole claim.
    A named tuple, not a frozen dataclass: one is made per job, and a frozen dataclass took
    ten times as long to make (3 µs).
    """

    id: uuid.UUID
    name: str
    payload_json: str
    queue: str
    priority: int
    run_at: datetime
    created_at: datetime
    context: str
    error_count: int
    timeout_seconds: float | None = None
    """The time limit enqueue() set for this job; None: its task's `timeout` option."""
    snooze_count: int = 0
    """How many times the job raised `Snooze` before this run."""
    trace_context: str | None = None
    """The W3C ``traceparent`` stored by `enqueue()` when tracing is on (`sqla_jobs.tracing`)."""
    problem: str | None = None
    """Why this row cannot be run as stored (a column the worker could not decode), if so."""

    @classmethod
    def from_rows(cls, keys: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[ClaimedJob]:
        """Build claimed jobs from a claim's result rows, whose columns `keys` names.

        Columns are found by name once for all the rows: a mapping per row cost 3 µs a job.
        """
        names = list(keys)
        values_of = operator.itemgetter(*(names.index(name) for name in CLAIMED_NAMES))
        return [cls._from_values(values_of(row)) for row in rows]

    @classmethod
    def _from_values(cls, values: tuple[Any, ...]) -> ClaimedJob:
        """Build a claimed job from the values of `CLAIMED_NAMES`, in that order (the fields'
        order, `problem` left out)."""
        _, _, _, _, priority, run_at, created_at, context, error_count, timeout, snoozes, _ = values
        if (
            type(run_at) is datetime
            and type(created_at) is datetime
            and run_at.tzinfo is not None
            and created_at.tzinfo is not None
            and type(priority) is int
            and type(error_count) is int
            and (timeout is None or type(timeout) is float)
            and type(snoozes) is int
            and type(context) is str
        ):
            # The common case (PostgreSQL hands typed values): nothing to convert or check.
            return _new_tuple(cls, values + _NO_PROBLEM)
        return cls._converted(dict(zip(CLAIMED_NAMES, values, strict=True)))

    @classmethod
    def _converted(cls, row: Mapping[str, Any]) -> ClaimedJob:
        """Build a claimed job from values stored as text (SQLite), noting what cannot be read."""
        problems: list[str] = []

        def time_of(column: str) -> datetime:
            value = row[column]
            try:
                parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
            except (TypeError, ValueError):
                problems.append(f"{column} is not a time: {str(value)[:100]!r}")
                return UNREADABLE_TIME
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

        def number_of(column: str, kind: type[int] | type[float]) -> Any:
            value = row[column]
            try:
                return None if value is None else kind(value)
            except (TypeError, ValueError, OverflowError):
                problems.append(f"{column} is not a number: {str(value)[:100]!r}")
                return 0

        return cls(
            id=row["id"],
            name=str(row["name"]),
            payload_json=str(row["payload"]),
            queue=str(row["queue"]),
            priority=number_of("priority", int),
            run_at=time_of("run_at"),
            created_at=time_of("created_at"),
            context=str(row["context"] or ""),
            error_count=number_of("error_count", int) or 0,
            timeout_seconds=number_of("timeout_seconds", float),
            snooze_count=number_of("snooze_count", int) or 0,
            trace_context=row["trace_context"],
            problem="; ".join(problems) or None,
        )


_new_tuple = tuple.__new__
_NO_PROBLEM = (None,)


@dataclass(frozen=True, slots=True)
class JobContext:
    """Facts about the running job, and the application's `state`, handed to `Task.run`."""

    job_id: uuid.UUID
    name: str
    queue: str
    priority: int
    error_count: int
    """Failed attempts before this one."""
    context: str
    """Why the job was enqueued, as given to `enqueue(context=...)`."""
    created_at: datetime
    run_at: datetime
    worker_id: str
    state: Any
    """Whatever the application gave the worker as `state` (its engine, its clients, …)."""
    snooze_count: int = field(default=0, kw_only=True)
    """Times this job snoozed (`raise Snooze(...)`) before this run; snoozes are not attempts."""
    _transactions: TransactionBinding | None = field(
        default=None, kw_only=True, repr=False, compare=False
    )
    """Set by the worker: what `transaction()` needs, and whether it has completed the job."""

    @property
    def attempt(self) -> int:
        """The number of this attempt, starting at 1."""
        return self.error_count + 1

    @property
    def is_completed(self) -> bool:
        """Tell whether `transaction()` has committed, deleting the job's row with its writes."""
        return self._transactions is not None and self._transactions.is_committed

    def transaction(self) -> JobTransaction:
        """Return a transaction whose commit also completes (deletes) this job, exactly once.

        Writes made in it are kept only if this worker still holds the job at commit; if another
        worker took it over, nothing is kept and `LockLostError` is raised. An exception in the
        block rolls everything back and the job fails as usual. Once committed, the job is done:
        it is neither deleted again nor retried, even if `run` raises afterwards.

        >>> async def run(self, ctx: JobContext) -> None:
        ...     async with ctx.transaction() as session:  # `with` in a plain `def run`
        ...         session.add(Invoice(order_id=self.order_id))
        """
        if self._transactions is None:
            raise TransactionUsageError(
                "ctx.transaction() needs a job run by a Worker; this context has no worker"
            )
        return JobTransaction(self._transactions)

    @classmethod
    def for_job(
        cls,
        job: ClaimedJob,
        *,
        worker_id: str,
        state: Any,
        transactions: TransactionBinding | None = None,
    ) -> JobContext:
        """Build the context of `job` run by `worker_id`; `transactions` enables transaction()."""
        # One per job: the frozen dataclass's __init__ (object.__setattr__ per field) took 3 µs,
        # three times as long as filling the same slots through their own setters.
        ctx = _new_object(cls)
        fill = _SLOT_SETTERS
        fill["job_id"](ctx, job.id)
        fill["name"](ctx, job.name)
        fill["queue"](ctx, job.queue)
        fill["priority"](ctx, job.priority)
        fill["error_count"](ctx, job.error_count)
        fill["context"](ctx, job.context)
        fill["created_at"](ctx, job.created_at)
        fill["run_at"](ctx, job.run_at)
        fill["worker_id"](ctx, worker_id)
        fill["state"](ctx, state)
        fill["snooze_count"](ctx, job.snooze_count)
        fill["_transactions"](ctx, transactions)
        return ctx


_new_object = object.__new__
_SLOT_SETTERS: dict[str, Any] = {
    name: getattr(JobContext, name).__set__ for name in JobContext.__dataclass_fields__
}
"""Each field's slot setter (`JobContext.for_job` fills every one)."""
