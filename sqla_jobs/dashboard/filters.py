"""The filters of the jobs and dead-letter lists, read from a query string or a form.

Bad values get one sentence (an HTTP 400 page), never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException

from sqla_jobs.admin import JobState

PAGE_SIZE = 50
MAX_TEXT = 255
# Every state of the job table (dead letters have a page of their own).
JOB_STATES = tuple(state.value for state in JobState if state is not JobState.DEAD)
AGES = {
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
}
"""The "older than" choices the lists offer."""


@dataclass(frozen=True)
class Filters:
    """What a list shows: its filters and its page (1-based)."""

    queue: str | None = None
    name: str | None = None
    state: str | None = None
    older_than: str | None = None
    page: int = 1

    @property
    def age(self) -> timedelta | None:
        """The "older than" filter as a duration."""
        return AGES[self.older_than] if self.older_than else None

    @property
    def offset(self) -> int:
        """How many rows come before this page."""
        return (self.page - 1) * PAGE_SIZE

    def chosen(self) -> dict[str, Any]:
        """Return the admin arguments (queue, name, older_than) these filters choose rows by.

        The state is left out: the dead-letter functions take none.
        """
        return {"queue": self.queue, "name": self.name, "older_than": self.age}

    def query(self, **changes: Any) -> str:
        """Return the query string of these filters with `changes`, e.g. ``page=2``."""
        fields = {
            "queue": self.queue,
            "name": self.name,
            "state": self.state,
            "older_than": self.older_than,
            "page": self.page if self.page != 1 else None,
            **changes,
        }
        return urlencode({key: value for key, value in fields.items() if value})


def read_filters(values: Mapping[str, Any], *, states: tuple[str, ...] = JOB_STATES) -> Filters:
    """Return the filters in `values` (query parameters or form fields); 400 when one is bad."""
    state = _text(values, "state")
    if state is not None and state not in states:
        raise HTTPException(400, f"state must be one of {', '.join(states)}, not {state!r}.")
    older_than = _text(values, "older_than")
    if older_than is not None and older_than not in AGES:
        raise HTTPException(400, f"older_than must be one of {', '.join(AGES)}.")
    page_text = _text(values, "page") or "1"
    if not page_text.isdigit() or int(page_text) < 1 or len(page_text) > 9:
        raise HTTPException(400, f"page must be a whole number of at least 1, not {page_text!r}.")
    return Filters(
        queue=_text(values, "queue"),
        name=_text(values, "name"),
        state=state,
        older_than=older_than,
        page=int(page_text),
    )


def _text(values: Mapping[str, Any], key: str) -> str | None:
    value = values.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or "\x00" in value:
        raise HTTPException(400, f"{key} must be text of at most {MAX_TEXT} characters.")
    return value.strip() or None
