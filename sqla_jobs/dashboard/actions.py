"""The dashboard's changes, each a POST with a CSRF token: retry, delete, cancel.

Each answers with a redirect (303) to the page it came from, carrying only counts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sqla_jobs import admin

from .filters import Filters, read_filters
from .forms import checked_form, parse_id, selected_ids
from .state import dashboard_of, root_of


async def retry_dead_letters(request: Request) -> Response:
    """Put the selected dead letters (or those matching the filters) back in the queue."""
    # A dead letter whose unique key is taken again stays where it is.
    return await _on_dead_letters(request, admin.retry_dead_letters, "retried")


async def delete_dead_letters(request: Request) -> Response:
    """Delete the selected dead letters (or those matching the filters) for good."""
    return await _on_dead_letters(request, admin.delete_dead_letters, "deleted")


async def cancel_job(request: Request) -> Response:
    """Ask for the job to be cancelled (dead-lettered; stopped if it is running)."""
    job_id = parse_id(request.path_params["job_id"])
    await checked_form(request)
    async with dashboard_of(request).session() as session:
        cancelled = await admin.cancel_jobs(session, [job_id])
        await session.commit()
    query = urlencode({"cancelled": cancelled})
    return RedirectResponse(f"{root_of(request)}/jobs/{job_id}?{query}", status_code=303)


async def _on_dead_letters(
    request: Request, operation: Callable[..., Awaitable[int]], done: str
) -> Response:
    """Run `operation` on the dead letters the form chooses; redirect back with its count."""
    form = await checked_form(request)
    dashboard = dashboard_of(request)
    async with dashboard.session() as session:
        # The operation commits batch by batch as it goes.
        count = await operation(session, **_selection(form, cap=dashboard.max_batch))
    return _back(request, form, **{done: count})


def _selection(form: FormData, *, cap: int) -> dict[str, Any]:
    """Return the admin arguments choosing the dead letters a form names, at most `cap`."""
    if form.get("scope") == "matching":
        filters = read_filters(form, states=())
        return {**filters.chosen(), "limit": cap}
    return {"ids": selected_ids(form, cap=cap), "limit": cap}


def _back(request: Request, form: FormData, **counts: int) -> Response:
    filters: Filters = read_filters(form, states=())
    query = "&".join(part for part in (filters.query(), urlencode(counts)) if part)
    return RedirectResponse(f"{root_of(request)}/dead-letters?{query}", status_code=303)
