"""What every change must pass: not read-only, a valid CSRF token, a bounded selection."""

from __future__ import annotations

import uuid

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .csrf import FIELD_NAME
from .state import dashboard_of

# Form fields besides the selected ids: the token, the scope, the filters.
_OTHER_FIELDS = 16


async def checked_form(request: Request) -> FormData:
    """Return the POSTed form, or refuse (403) in read-only mode or without a valid CSRF token."""
    dashboard = dashboard_of(request)
    if dashboard.read_only:
        raise HTTPException(403, "This dashboard is read-only: it changes nothing.")
    # One field more than the cap allows, so an over-long selection is refused by the cap's own
    # message instead of the parser's.
    form = await request.form(max_fields=dashboard.max_batch + 1 + _OTHER_FIELDS, max_files=0)
    submitted = form.get(FIELD_NAME)
    if not isinstance(submitted, str) or not dashboard.csrf.accepts(request, submitted):
        raise HTTPException(
            403, "The form's CSRF token is missing or invalid: reload the page and try again."
        )
    return form


def selected_ids(form: FormData, *, cap: int) -> list[uuid.UUID]:
    """Return the ids ticked in `form` (field ``ids``); 400 when one is bad or past `cap`."""
    values = form.getlist("ids")
    if len(values) > cap:
        raise HTTPException(400, f"At most {cap} dead letters can be changed at once.")
    if not values:
        raise HTTPException(400, "Select at least one dead letter first.")
    try:
        return [uuid.UUID(value) for value in values if isinstance(value, str)]
    except ValueError:
        raise HTTPException(400, "Each selected id must be a UUID.") from None


def parse_id(text: str) -> uuid.UUID:
    """Return `text` as a job id; 404 when it is not a UUID (no such job can exist)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise HTTPException(404, f"No job has the id {text!r}.") from None
