"""`execution`: every outcome `execute` decides, and the deciders beside it; no database.

Each test builds a `ClaimedJob` by hand, its `JobContext.for_job`, and runs plain ``def run``
jobs with `asyncio.to_thread`, as the worker would.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from sqla_jobs import JobContext, Task
from sqla_jobs.context import ClaimedJob
from sqla_jobs.execution import (
    MAX_ERROR_CHARS,
    Completed,
    DeadLetter,
    DoneInTransaction,
    Outcome,
    Retry,
    cancelled_outcome,
    execute,
    failure_outcome,
    format_error,
    lost_outcome,
    retry_delay,
)
from sqla_jobs.retry import MAX_RETRY_DELAY, exponential_backoff
from sqla_jobs.transaction import TransactionBinding

ran: list[str] = []
threads: list[int] = []
on_run: list[Callable[[], None]] = []
"""Called by `Behaves` when it runs: how a test simulates ctx.transaction() committing."""


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()
    threads.clear()
    on_run.clear()


class Behaves(Task, name="tests.execution.behaves"):
    """An async job that does what `action` says."""

    action: str = "ok"

    async def run(self, ctx: JobContext) -> None:
        ran.append(self.action)
        for callback in on_run:
            callback()
        match self.action:
            case "ok":
                pass
            case "fail":
                raise ValueError("it went wrong")
            case "system_exit":
                raise SystemExit(3)
            case "keyboard_interrupt":
                raise KeyboardInterrupt
            case "cancelled":
                raise asyncio.CancelledError
            case "hang":
                await asyncio.Event().wait()
            case "own_timeout":
                raise TimeoutError("the job's own")


class SyncBehaves(Task, name="tests.execution.sync_behaves"):
    """A plain ``def run`` job: it runs in a thread."""

    action: str = "ok"
    seconds: float = 0.0

    def run(self, ctx: JobContext) -> None:
        threads.append(threading.get_ident())
        ran.append(f"sync:{self.action}")
        time.sleep(self.seconds)
        if self.action == "fail":
            raise ValueError("it went wrong in a thread")
        if self.action == "system_exit":
            raise SystemExit(4)


class Timed(Task, name="tests.execution.timed", timeout=timedelta(milliseconds=50)):
    seconds: float = 30.0

    async def run(self, ctx: JobContext) -> None:
        await asyncio.sleep(self.seconds)
        ran.append("timed")


class SyncTimed(Task, name="tests.execution.sync_timed", timeout=timedelta(milliseconds=50)):
    seconds: float = 0.2

    def run(self, ctx: JobContext) -> None:
        time.sleep(self.seconds)
        ran.append("sync_timed")


class Typed(Task, name="tests.execution.typed"):
    count: int

    async def run(self, ctx: JobContext) -> None:
        ran.append(f"typed:{self.count}")


def _seven_per_failure(error_count: int) -> timedelta:
    return timedelta(seconds=7 * (error_count + 1))


class FailsWithBackoff(Task, name="tests.execution.backoff", backoff=_seven_per_failure):
    async def run(self, ctx: JobContext) -> None:
        raise ValueError("fails")


class NoRetries(Task, name="tests.execution.no_retries", max_retries=0):
    async def run(self, ctx: JobContext) -> None:
        raise ValueError("fails once and for all")


class FiveRetries(Task, name="tests.execution.five_retries", max_retries=5):
    async def run(self, ctx: JobContext) -> None:
        raise ValueError("fails")


TASKS: Mapping[str, type[Task]] = {
    task.__task_options__.name: task
    for task in (
        Behaves,
        SyncBehaves,
        Timed,
        SyncTimed,
        Typed,
        FailsWithBackoff,
        NoRetries,
        FiveRetries,
    )
}


def claimed(
    task: Task | None = None,
    *,
    name: str | None = None,
    payload_json: str | None = None,
    error_count: int = 0,
    timeout_seconds: float | None = None,
    problem: str | None = None,
) -> ClaimedJob:
    now = datetime.now(UTC)
    return ClaimedJob(
        id=uuid.uuid4(),
        name=name or (type(task).__task_options__.name if task else "tests.execution.none"),
        payload_json=payload_json or (task.model_dump_json() if task else "{}"),
        queue="default",
        priority=0,
        run_at=now,
        created_at=now,
        context="a test",
        error_count=error_count,
        timeout_seconds=timeout_seconds,
        problem=problem,
    )


async def in_thread(function: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(function)


async def run(
    job: ClaimedJob,
    *,
    default_max_retries: int = 20,
    transactions: TransactionBinding | None = None,
) -> Outcome:
    ctx = JobContext.for_job(job, worker_id="worker-1", state=None, transactions=transactions)
    return await execute(
        job, ctx, tasks=TASKS, default_max_retries=default_max_retries, run_in_thread=in_thread
    )


@pytest.fixture
async def binding() -> AsyncIterator[TransactionBinding]:
    """A binding whose engines never connect: a test opens and closes it as a transaction would."""
    engine = create_async_engine("sqlite+aiosqlite://")
    sync_engine = create_engine("sqlite://")
    yield TransactionBinding(
        delete=lambda: pytest.fail("no delete is built without a database"),
        engine=engine,
        sync_engine=lambda: sync_engine,
        loop=asyncio.get_running_loop(),
    )
    sync_engine.dispose()
    await engine.dispose()


def commit_in_transaction(binding: TransactionBinding) -> None:
    """Do to `binding` what a committed `ctx.transaction()` does."""
    binding.open()
    binding.close(committed=True)


def retry_of(outcome: Outcome) -> Retry:
    assert isinstance(outcome, Retry), outcome
    return outcome


async def test_a_job_that_returns_is_completed() -> None:
    assert await run(claimed(Behaves())) == Completed()
    assert ran == ["ok"]


async def test_a_sync_job_runs_in_a_thread_and_is_completed() -> None:
    assert await run(claimed(SyncBehaves())) == Completed()
    assert ran == ["sync:ok"]
    [thread] = threads
    assert thread != threading.get_ident()


async def test_the_payload_is_validated_from_its_json_text() -> None:
    assert await run(claimed(name="tests.execution.typed", payload_json='{"count": "7"}')) == (
        Completed()
    )
    assert ran == ["typed:7"]


async def test_a_job_that_committed_its_transaction_is_done_in_it(
    binding: TransactionBinding,
) -> None:
    on_run.append(lambda: commit_in_transaction(binding))
    assert await run(claimed(Behaves()), transactions=binding) == DoneInTransaction()


async def test_a_job_that_raises_after_its_transaction_committed_is_done_with_the_error(
    binding: TransactionBinding,
) -> None:
    on_run.append(lambda: commit_in_transaction(binding))
    outcome = await run(claimed(Behaves(action="fail")), transactions=binding)
    assert isinstance(outcome, DoneInTransaction)
    assert "ValueError: it went wrong" in (outcome.error or "")


async def test_a_rolled_back_transaction_leaves_an_ordinary_failure(
    binding: TransactionBinding,
) -> None:
    def roll_back() -> None:
        binding.open()
        binding.close(committed=False)

    on_run.append(roll_back)
    outcome = retry_of(await run(claimed(Behaves(action="fail")), transactions=binding))
    assert "ValueError: it went wrong" in outcome.error


async def test_a_failing_job_is_retried_after_the_default_backoff_with_its_traceback() -> None:
    outcome = retry_of(await run(claimed(Behaves(action="fail"), error_count=2)))
    assert outcome.delay == exponential_backoff(2) == timedelta(seconds=8)
    assert outcome.error.startswith("Traceback (most recent call last):")
    assert "ValueError: it went wrong" in outcome.error
    assert "in run" in outcome.error


async def test_a_failing_job_is_retried_after_its_tasks_backoff() -> None:
    outcome = retry_of(await run(claimed(FailsWithBackoff(), error_count=2)))
    assert outcome.delay == timedelta(seconds=21)


async def test_a_failing_sync_job_is_retried() -> None:
    outcome = retry_of(await run(claimed(SyncBehaves(action="fail"))))
    assert "ValueError: it went wrong in a thread" in outcome.error


async def test_a_task_with_max_retries_zero_is_dead_lettered_at_its_first_failure() -> None:
    outcome = await run(claimed(NoRetries()), default_max_retries=20)
    assert isinstance(outcome, DeadLetter)
    assert "ValueError: fails once and for all" in outcome.error


@pytest.mark.parametrize(
    ("error_count", "expected"), [(2, Retry), (3, DeadLetter)], ids=["retries_left", "exhausted"]
)
async def test_the_worker_default_max_retries_applies_to_a_task_without_its_own(
    error_count: int, expected: type[Outcome]
) -> None:
    outcome = await run(
        claimed(Behaves(action="fail"), error_count=error_count), default_max_retries=3
    )
    assert isinstance(outcome, expected)


@pytest.mark.parametrize(
    ("error_count", "expected"), [(4, Retry), (5, DeadLetter)], ids=["retries_left", "exhausted"]
)
async def test_the_tasks_max_retries_overrides_the_worker_default(
    error_count: int, expected: type[Outcome]
) -> None:
    outcome = await run(claimed(FiveRetries(), error_count=error_count), default_max_retries=0)
    assert isinstance(outcome, expected)


async def test_an_unknown_task_name_is_a_failed_attempt_naming_it() -> None:
    outcome = retry_of(await run(claimed(name="tests.execution.nobody", error_count=1)))
    assert "UnknownTaskError" in outcome.error
    assert "'tests.execution.nobody'" in outcome.error
    assert outcome.delay == exponential_backoff(1)


async def test_an_unknown_task_name_is_dead_lettered_once_the_default_retries_are_spent() -> None:
    outcome = await run(
        claimed(name="tests.execution.nobody", error_count=2), default_max_retries=2
    )
    assert isinstance(outcome, DeadLetter)
    assert "UnknownTaskError" in outcome.error


@pytest.mark.parametrize(
    "payload_json", ['{"count": "many"}', "{}", "{not json"], ids=["bad_value", "missing", "text"]
)
async def test_a_payload_that_no_longer_validates_is_a_failed_attempt(payload_json: str) -> None:
    job = claimed(name="tests.execution.typed", payload_json=payload_json)
    outcome = retry_of(await run(job))
    assert "PayloadValidationError: payload does not validate as Typed" in outcome.error
    assert ran == []


async def test_a_row_with_a_problem_is_a_failed_attempt_and_does_not_run() -> None:
    job = claimed(Behaves(), problem="created_at is not a time: 'yesterday'")
    outcome = retry_of(await run(job))
    assert "UndecodableRowError: the job's row cannot be read" in outcome.error
    assert "created_at is not a time: 'yesterday'" in outcome.error
    assert ran == []


async def test_a_row_with_a_problem_is_dead_lettered_once_retries_are_spent() -> None:
    outcome = await run(claimed(NoRetries(), problem="priority is not a number: 'x'"))
    assert isinstance(outcome, DeadLetter)
    assert "UndecodableRowError" in outcome.error


@pytest.mark.parametrize(
    ("action", "raised"),
    [("system_exit", "SystemExit: 3"), ("keyboard_interrupt", "KeyboardInterrupt")],
)
async def test_a_base_exception_raised_by_a_job_is_a_failed_attempt(
    action: str, raised: str
) -> None:
    outcome = retry_of(await run(claimed(Behaves(action=action))))
    assert raised in outcome.error


async def test_system_exit_in_a_sync_job_is_a_failed_attempt() -> None:
    outcome = retry_of(await run(claimed(SyncBehaves(action="system_exit"))))
    assert "SystemExit: 4" in outcome.error


async def test_a_cancelled_error_raised_by_a_job_propagates() -> None:
    with pytest.raises(asyncio.CancelledError):
        await run(claimed(Behaves(action="cancelled")))


async def test_cancelling_a_running_job_propagates_the_cancellation() -> None:
    running = asyncio.create_task(run(claimed(Behaves(action="hang"))))
    while ran != ["hang"]:
        await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_an_async_job_is_cancelled_at_its_timeout_with_job_timeout_error() -> None:
    outcome = retry_of(await run(claimed(Timed())))
    assert "JobTimeoutError: cancelled at its timeout of 0.05 s" in outcome.error
    assert ran == []


async def test_the_timeout_enqueue_set_overrides_the_tasks() -> None:
    outcome = retry_of(await run(claimed(Timed(seconds=0.5), timeout_seconds=0.01)))
    assert "JobTimeoutError: cancelled at its timeout of 0.01 s" in outcome.error


async def test_an_async_job_within_its_timeout_is_completed() -> None:
    assert await run(claimed(Timed(seconds=0))) == Completed()
    assert ran == ["timed"]


async def test_a_jobs_own_timeout_error_is_an_ordinary_failure() -> None:
    outcome = retry_of(await run(claimed(Behaves(action="own_timeout"), timeout_seconds=30)))
    assert "TimeoutError: the job's own" in outcome.error
    assert "JobTimeoutError" not in outcome.error


async def test_a_sync_job_over_its_timeout_runs_to_its_end_and_fails() -> None:
    outcome = retry_of(await run(claimed(SyncTimed(seconds=0.2))))
    assert ran == ["sync_timed"]
    assert "JobTimeoutError: ran " in outcome.error
    assert "over its timeout of 0.05 s" in outcome.error
    assert "a sync job cannot be interrupted" in outcome.error


def test_a_job_cancelled_on_request_is_dead_lettered() -> None:
    assert cancelled_outcome("by the operator", is_completed=False) == DeadLetter(
        error="cancelled: by the operator"
    )


def test_a_job_cancelled_after_its_transaction_committed_is_done() -> None:
    assert cancelled_outcome("by the operator", is_completed=True) == DoneInTransaction(
        error="cancelled: by the operator"
    )


def test_a_lost_job_is_a_failed_attempt_with_its_tasks_backoff() -> None:
    outcome = lost_outcome(
        name="tests.execution.backoff",
        error_count=1,
        error="its worker died",
        cancel_reason=None,
        task_class=FailsWithBackoff,
        default_max_retries=20,
    )
    assert outcome == Retry(error="its worker died", delay=timedelta(seconds=14))


def test_a_lost_job_without_retries_left_is_dead_lettered() -> None:
    outcome = lost_outcome(
        name="tests.execution.nobody",
        error_count=3,
        error="its worker died",
        cancel_reason=None,
        task_class=None,
        default_max_retries=3,
    )
    assert outcome == DeadLetter(error="its worker died")


def test_a_lost_job_that_was_cancelled_is_dead_lettered_whatever_its_retries() -> None:
    outcome = lost_outcome(
        name="tests.execution.five_retries",
        error_count=0,
        error="its worker died",
        cancel_reason="by the operator",
        task_class=FiveRetries,
        default_max_retries=20,
    )
    assert outcome == DeadLetter(error="cancelled: by the operator (its worker died)")


def test_a_failure_of_an_unknown_task_uses_the_default_policy() -> None:
    assert failure_outcome("boom", error_count=0, task_class=None, default_max_retries=1) == Retry(
        error="boom", delay=timedelta(seconds=2)
    )
    assert failure_outcome(
        "boom", error_count=1, task_class=None, default_max_retries=1
    ) == DeadLetter(error="boom")


def test_a_failure_with_max_retries_zero_is_dead_lettered_at_once() -> None:
    assert failure_outcome(
        "boom", error_count=0, task_class=NoRetries, default_max_retries=20
    ) == DeadLetter(error="boom")


def _raises(error_count: int) -> timedelta:
    if error_count == 0:
        return timedelta(0)
    raise RuntimeError("a bug in the application's backoff")


# Each misbehaves from the second failure on: the class-creation check (error_count 0) passes.
def _not_a_timedelta(error_count: int) -> timedelta:
    return timedelta(0) if error_count == 0 else 5  # type: ignore[return-value]  # under test


def _negative(error_count: int) -> timedelta:
    return timedelta(0) if error_count == 0 else timedelta(seconds=-1)


def _too_large(error_count: int) -> timedelta:
    return timedelta(0) if error_count == 0 else MAX_RETRY_DELAY + timedelta(seconds=1)


def _at_the_limit(error_count: int) -> timedelta:
    return MAX_RETRY_DELAY


def _zero(error_count: int) -> timedelta:
    return timedelta(0)


class BackoffRaises(Task, name="tests.execution.backoff_raises", backoff=_raises):
    async def run(self, ctx: JobContext) -> None:
        raise ValueError("fails")


class BackoffNotTimedelta(Task, name="tests.execution.backoff_int", backoff=_not_a_timedelta):
    async def run(self, ctx: JobContext) -> None: ...


class BackoffNegative(Task, name="tests.execution.backoff_negative", backoff=_negative):
    async def run(self, ctx: JobContext) -> None: ...


class BackoffTooLarge(Task, name="tests.execution.backoff_too_large", backoff=_too_large):
    async def run(self, ctx: JobContext) -> None: ...


class BackoffAtLimit(Task, name="tests.execution.backoff_at_limit", backoff=_at_the_limit):
    async def run(self, ctx: JobContext) -> None: ...


class BackoffZero(Task, name="tests.execution.backoff_zero", backoff=_zero):
    async def run(self, ctx: JobContext) -> None: ...


@pytest.mark.parametrize(
    "task_class", [BackoffRaises, BackoffNotTimedelta, BackoffNegative, BackoffTooLarge]
)
def test_a_bad_backoff_falls_back_to_the_default_policy_and_logs_an_error(
    task_class: type[Task], log_records: list[Any]
) -> None:
    assert retry_delay(task_class, 3) == exponential_backoff(3)
    [record] = [r for r in log_records if r["level"].name == "ERROR"]
    assert "using the default backoff" in record["message"]
    assert record["extra"]["task"] == task_class.__qualname__


def test_a_backoff_that_raises_is_logged_with_its_exception(log_records: list[Any]) -> None:
    retry_delay(BackoffRaises, 1)
    [record] = log_records
    assert isinstance(record["exception"].value, RuntimeError)


def test_a_backoff_returning_no_timedelta_is_logged_with_what_it_returned(
    log_records: list[Any],
) -> None:
    retry_delay(BackoffNotTimedelta, 1)
    [record] = log_records
    assert record["extra"]["returned"] == "5"


@pytest.mark.parametrize(
    ("task_class", "delay"), [(BackoffAtLimit, MAX_RETRY_DELAY), (BackoffZero, timedelta(0))]
)
def test_a_backoff_at_either_bound_is_used(
    task_class: type[Task], delay: timedelta, log_records: list[Any]
) -> None:
    assert retry_delay(task_class, 3) == delay
    assert log_records == []


def test_the_default_policy_serves_a_job_of_no_known_task() -> None:
    assert retry_delay(None, 4) == exponential_backoff(4) == timedelta(seconds=32)


async def test_a_failing_job_whose_backoff_raises_is_retried_after_the_default_policy(
    log_records: list[Any],
) -> None:
    job = claimed(BackoffRaises(), error_count=1)
    outcome = await execute(
        job,
        JobContext.for_job(job, worker_id="worker-1", state=None),
        tasks={"tests.execution.backoff_raises": BackoffRaises},
        default_max_retries=20,
        run_in_thread=in_thread,
    )
    assert retry_of(outcome).delay == exponential_backoff(1)
    assert [r["level"].name for r in log_records] == ["ERROR"]


def test_an_error_keeps_its_head_and_tail_when_it_is_too_long() -> None:
    error = format_error(ValueError("x" * (3 * MAX_ERROR_CHARS) + "the end"))
    assert len(error) < MAX_ERROR_CHARS + 100
    assert error.startswith("ValueError: xxx")
    assert error.endswith("the end\n")
    assert "characters cut" in error


def test_an_error_with_a_nul_character_stays_storable() -> None:
    assert format_error(ValueError("a\x00b")) == "ValueError: a\\x00b\n"
