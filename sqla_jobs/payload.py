"""Encode a task's fields as the JSON text of its job's payload, refusing what JSON cannot hold.

Owns `encode_payload` and its checks: values JSON cannot hold (NaN, infinities, NUL characters,
text that is not valid Unicode) and payloads over their size limit raise `PayloadError` in the
caller's request, rather than failing its transaction at commit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from pydantic_core import PydanticSerializationError

from .errors import PayloadError
from .options import DEFAULT_MAX_PAYLOAD_BYTES
from .tasks import Task

# A NUL character, as JSON escapes it: "\u0000" after an even number of backslashes (an odd
# number would make it the text "\u0000", which is fine).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def encode_payload(task: Task, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Return `task`'s fields as JSON text, or raise `PayloadError` saying what is wrong.

    Refused: what JSON cannot hold (NaN, infinities, NUL characters, text or bytes that are
    not valid UTF-8), and JSON longer than `max_bytes` in compact UTF-8. Everything refused
    here would otherwise fail the caller's whole transaction at commit, or change on the way.
    """
    name = type(task).__qualname__
    try:
        text = task.model_dump_json()
    except (PydanticSerializationError, UnicodeError) as exc:
        raise PayloadError(f"{name}{_failing_field(task)} cannot be stored as JSON: {exc}") from exc
    # Task dumps NaN and infinities as the constants NaN and Infinity, which are not JSON;
    # the substring test keeps the search for their field off the common path.
    if "NaN" in text or "Infinity" in text:
        found = _non_finite(task.model_dump(), "")
        if found is not None:
            path, value = found
            raise PayloadError(f"{name}: {path} is {value}, which JSON cannot hold")
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        # PostgreSQL rejects \u0000 in JSONB at commit, which would sink the caller's transaction.
        raise PayloadError(f"{name} payload contains a NUL character (\\u0000)")
    # PostgreSQL would take up to ~256 MB of JSONB; a runaway payload is better refused here,
    # in the caller's request, than read back by every claim and retry of the job.
    size = len(text) if text.isascii() else len(text.encode())
    if size > max_bytes:
        raise PayloadError(
            f"{name} payload is {size} bytes of JSON, over the limit of "
            f"{max_bytes} bytes (max_payload_bytes)"
        )
    return text


def _failing_field(task: Task) -> str:
    """Return " field <name>" for the first field that cannot be serialised, or ""."""
    for field in type(task).model_fields:
        try:
            task.model_dump_json(include={field})
        except (PydanticSerializationError, UnicodeError):
            return f" field {field!r}"
    return ""


def _non_finite(value: object, path: str) -> tuple[str, float] | None:
    """Return the path and value of the first NaN or infinity inside `value`, if any."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        items: Iterable[tuple[object, object]] = value.items()
        for key, item in items:
            found = _non_finite(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            found = _non_finite(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
