"""One check per option: Task class keywords and per-call overrides refuse the same values."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sqla_jobs import ConfigurationError, EnqueueError, JobContext, Task, enqueue, enqueue_many
from sqla_jobs.bulk import enqueue_bulk
from sqla_jobs.options import check_queue


class Plain(Task, name="tests.options.plain"):
    async def run(self, ctx: JobContext) -> None:
        return None


def define_task(**options: Any) -> type[Task]:
    return type("Bad", (Task,), {"run": lambda self, ctx: None, "__module__": __name__}, **options)


BAD_VALUES = [
    pytest.param("queue", "", "queue must be a non-empty string", id="queue-empty"),
    pytest.param(
        "queue", "q" * 256, "queue must be a non-empty string of at most 255", id="queue-long"
    ),
    pytest.param("queue", 3, "queue must be a non-empty string", id="queue-not-str"),
    pytest.param(
        "queue", "mail queue", "queue must contain no whitespace or control", id="queue-space"
    ),
    pytest.param(
        "queue", "mail\n", "queue must contain no whitespace or control", id="queue-newline"
    ),
    pytest.param("queue", "a\tb", "queue must contain no whitespace or control", id="queue-tab"),
    pytest.param("queue", "a\x00b", "queue must contain no whitespace or control", id="queue-nul"),
    pytest.param(
        "queue", "nbsp\xa0", "queue must contain no whitespace or control", id="queue-nbsp"
    ),
    pytest.param(
        "queue", "zw\u200bsp", "queue must contain no whitespace or control", id="queue-zero-width"
    ),
    pytest.param(
        "queue", "\ud800", "queue must contain no whitespace or control", id="queue-surrogate"
    ),
    pytest.param("priority", 2**31, "priority must be an int between", id="priority-2**31"),
    pytest.param("priority", 2**40, "priority must be an int between", id="priority-2**40"),
    pytest.param("priority", -(2**31) - 1, "priority must be an int between", id="priority-low"),
    pytest.param("priority", True, "priority must be an int between", id="priority-bool"),
    pytest.param("priority", "1", "priority must be an int between", id="priority-str"),
    pytest.param("priority", 1.0, "priority must be an int between", id="priority-float"),
    pytest.param("max_payload_bytes", 0, "max_payload_bytes must be", id="max-bytes-zero"),
    pytest.param("max_payload_bytes", 1.5, "max_payload_bytes must be", id="max-bytes-float"),
    pytest.param("max_payload_bytes", True, "max_payload_bytes must be", id="max-bytes-bool"),
    pytest.param("timeout", timedelta(0), "timeout must be a positive", id="timeout-zero"),
    pytest.param("timeout", timedelta(seconds=-1), "timeout must be", id="timeout-negative"),
    pytest.param("timeout", 30, "timeout must be a positive timedelta", id="timeout-int"),
]


@pytest.mark.parametrize(("option", "value", "message"), BAD_VALUES)
def test_class_options_and_per_call_overrides_refuse_the_same_values(
    option: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"^Bad: {message}"):
        define_task(**{option: value})
    with pytest.raises(EnqueueError, match=f"^{message}"):
        enqueue(Plain(), **{option: value})
    with pytest.raises(EnqueueError, match=f"^{message}"):
        enqueue_many([Plain()], **{option: value})
    with pytest.raises(EnqueueError, match=f"^{message}"):
        enqueue_bulk(object(), [Plain()], **{option: value})  # type: ignore[call-overload]  # the options raise first


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("queue", "q" * 255),
        ("queue", "mail.eu-west_1:high"),
        ("queue", "naïve-中文-😀"),
        ("priority", 2**31 - 1),
        ("priority", -(2**31)),
        ("max_payload_bytes", 2),
        ("timeout", timedelta(microseconds=1)),
    ],
)
def test_class_options_and_per_call_overrides_accept_the_same_values(
    option: str, value: Any
) -> None:
    task_class = define_task(**{option: value})
    assert getattr(task_class.__task_options__, option) == value
    enqueue(Plain(), **{option: value})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"name": ""}, "name must be a non-empty string", id="name-empty"),
        pytest.param(
            {"name": "n" * 256}, "name must be a non-empty string of at most", id="name-long"
        ),
        pytest.param({"name": "\udcff"}, "name must be valid Unicode", id="name-surrogate"),
        pytest.param({"max_retries": -1}, "max_retries must be an int >= 0", id="retries-neg"),
        pytest.param({"max_retries": "3"}, "max_retries must be an int >= 0", id="retries-str"),
        pytest.param({"backoff": 3}, "backoff must be callable", id="backoff-not-callable"),
        pytest.param(
            {"backoff": lambda n: 1 / n}, "backoff raised ZeroDivisionError", id="backoff-raises"
        ),
        pytest.param(
            {"backoff": lambda n: 5},
            "backoff must return a non-negative timedelta; .* returned 5",
            id="backoff-int",
        ),
        pytest.param(
            {"backoff": lambda n: timedelta(seconds=-1)},
            "backoff must return a non-negative timedelta",
            id="backoff-negative",
        ),
        pytest.param({"backoff": lambda: timedelta(1)}, "backoff raised TypeError", id="arity"),
    ],
)
def test_class_only_options_are_checked_at_class_creation(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"^Bad: {message}"):
        define_task(**options)


@pytest.mark.parametrize(
    ("context", "message"),
    [("a\x00b", "without NUL"), ("\ud800", "valid Unicode"), (3, "context must be a string")],
)
def test_bad_context_is_refused_by_every_form(context: object, message: str) -> None:
    with pytest.raises(EnqueueError, match=message):
        enqueue(Plain(), context=context)  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(EnqueueError, match=message):
        enqueue_many([Plain()], context=context)  # type: ignore[arg-type]  # ditto


def test_the_queue_message_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"no whitespace or control characters: 'mail\\n'"):
        check_queue("mail\n")
