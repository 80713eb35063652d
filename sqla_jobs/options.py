"""One check per job option, shared by Task class keywords and per-call overrides of `enqueue`.

Each check returns the value it accepts or raises `ValueError` with a message that names the
option; `tasks` turns it into a `ConfigurationError` (a class keyword), `enqueue` into an
`EnqueueError` (a call). So both paths refuse exactly the same values, with the same words,
before anything reaches the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeGuard

from .retry import Backoff

MAX_NAME_LENGTH = 255
"""The longest task or queue name, in characters (the columns are VARCHAR(255))."""
DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576
DEFAULT_MAX_SNOOZES = 100
MAX_QUEUE_LIMIT = 2**31 - 1
"""The largest cluster-wide limit of a queue's running jobs (the column is an INTEGER)."""
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def check_name(name: object) -> str:
    """Return `name` if it can name a task, else raise `ValueError`."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ValueError(f"name must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
    if not _is_utf8(name):
        raise ValueError("name must be valid Unicode text (no lone surrogates)")
    return name


def check_queue(queue: object) -> str:
    """Return `queue` if it can name a queue, else raise `ValueError`.

    A queue name is also a NOTIFY payload, a `--queues` command-line value and a log field:
    whitespace or control characters there are always a mistake (a stray newline, a tab).
    """
    if not isinstance(queue, str) or not 1 <= len(queue) <= MAX_NAME_LENGTH:
        raise ValueError(
            f"queue must be a non-empty string of at most {MAX_NAME_LENGTH} characters"
        )
    # isprintable() is false for control, format, separator and surrogate characters; space
    # is the one whitespace character it accepts.
    if not queue.isprintable() or " " in queue:
        raise ValueError(f"queue must contain no whitespace or control characters: {queue!r}")
    return queue


def check_priority(priority: object) -> int:
    """Return `priority` if it fits the INTEGER column, else raise `ValueError`."""
    if not _is_int(priority) or not _INT32_MIN <= priority <= _INT32_MAX:
        raise ValueError("priority must be an int between -2**31 and 2**31 - 1")
    return priority


def check_max_retries(max_retries: object) -> int | None:
    """Return `max_retries` (None: the worker's setting) if valid, else raise `ValueError`."""
    if max_retries is None:
        return None
    if not _is_int(max_retries) or max_retries < 0:
        raise ValueError("max_retries must be an int >= 0 (or None)")
    return max_retries


def check_max_snoozes(max_snoozes: object) -> int:
    """Return `max_snoozes` if valid, else raise `ValueError`."""
    if not _is_int(max_snoozes) or not 0 <= max_snoozes <= _INT32_MAX:
        raise ValueError("max_snoozes must be an int between 0 and 2**31 - 1")
    return max_snoozes


def check_backoff(backoff: object) -> Backoff:
    """Return `backoff` if it maps an error count to a delay, else raise `ValueError`.

    It is called once with error count 0, so a backoff that raises or returns something other
    than a non-negative timedelta is refused when the task class is created rather than when a
    job first fails.
    """
    if not callable(backoff):
        raise ValueError("backoff must be callable: error_count -> timedelta")
    function: Callable[[int], object] = backoff
    try:
        first = function(0)
    except Exception as exc:
        raise ValueError(f"backoff raised {type(exc).__name__} for error_count 0: {exc}") from exc
    if not isinstance(first, timedelta) or first < timedelta(0):
        raise ValueError(
            f"backoff must return a non-negative timedelta; for error_count 0 it returned {first!r}"
        )
    return function  # type: ignore[return-value]  # it returned a timedelta for 0


def check_max_payload_bytes(limit: object) -> int:
    """Return `limit` if it is a payload size limit, else raise `ValueError`."""
    if not _is_int(limit) or limit < 1:
        raise ValueError("max_payload_bytes must be an int of at least 1")
    return limit


def check_timeout(timeout: object) -> timedelta | None:
    """Return `timeout` (None: no limit) if valid, else raise `ValueError`."""
    if timeout is None:
        return None
    if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
        raise ValueError("timeout must be a positive timedelta (or None)")
    return timeout


def check_context(context: object) -> str:
    """Return `context` if the TEXT column can store it, else raise `ValueError`."""
    if not isinstance(context, str) or "\x00" in context:
        raise ValueError("context must be a string without NUL characters")
    if not _is_utf8(context):
        raise ValueError("context must be valid Unicode text (no lone surrogates)")
    return context


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_utf8(text: str) -> bool:
    # A lone surrogate passes Python but fails the database's encoding at commit.
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
