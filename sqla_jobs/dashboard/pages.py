"""The dashboard's read-only pages: overview, jobs, one job, dead letters, workers."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sqla_jobs import admin
from sqla_jobs.admin import JobState

from .filters import AGES, JOB_STATES, PAGE_SIZE, Filters, read_filters
from .forms import parse_id
from .overview import overview_context
from .state import dashboard_of, render

NOTICES = {
    "retried": "{} dead letter(s) put back in the queue.",
    "deleted": "{} dead letter(s) deleted.",
    "cancelled": "Cancellation requested for {} job(s).",
}


async def overview_page(request: Request) -> Response:
    """Show per-queue counts, the last hour's throughput and failure rate, live workers."""
    async with dashboard_of(request).session() as session:
        context = await overview_context(session)
    return render(request, "overview.html", {"active": "overview", **context})


async def jobs_page(request: Request) -> Response:
    """List the jobs that match the query's filters, a page at a time."""
    filters = read_filters(request.query_params)
    state = JobState(filters.state) if filters.state else None
    async with dashboard_of(request).session() as session:
        total = await admin.count_jobs(session, state=state, **filters.chosen())
        rows = await admin.list_jobs(
            session, state=state, limit=PAGE_SIZE, offset=filters.offset, **filters.chosen()
        )
    return _list_page(request, "jobs.html", filters, rows, total, active="jobs", states=JOB_STATES)


async def job_page(request: Request) -> Response:
    """Show one job or dead letter: its facts, payload (unless hidden) and last error."""
    job_id = parse_id(request.path_params["job_id"])
    async with dashboard_of(request).session() as session:
        job = await admin.get_job(session, job_id)
    if job is None:
        raise HTTPException(404, f"No job or dead letter has the id {job_id}.")
    context = {
        "job": job,
        "active": "dead" if job.state == "dead" else "jobs",
        "notices": _notices(request),
        # Not even serialised when hidden, so it cannot leak into the page by mistake.
        "payload": None
        if dashboard_of(request).hide_payloads
        else json.dumps(job.payload, indent=2, ensure_ascii=False, sort_keys=True),
    }
    return render(request, "job.html", context)


async def dead_letters_page(request: Request) -> Response:
    """List the dead letters that match the query's filters, with retry and delete."""
    filters = read_filters(request.query_params, states=())
    async with dashboard_of(request).session() as session:
        total = await admin.count_dead_letters(session, **filters.chosen())
        rows = await admin.list_dead_letters(
            session, limit=PAGE_SIZE, offset=filters.offset, **filters.chosen()
        )
    return _list_page(request, "dead_letters.html", filters, rows, total, active="dead")


async def workers_page(request: Request) -> Response:
    """List the registered workers: heartbeat age and running jobs."""
    async with dashboard_of(request).session() as session:
        rows = await admin.workers(session)
    return render(request, "workers.html", {"active": "workers", "rows": rows})


def _list_page(
    request: Request,
    template: str,
    filters: Filters,
    rows: list[admin.JobSummary],
    total: int,
    **more: Any,
) -> Response:
    """Render a filtered list: a page of `rows` of `total`, its filters and the notices."""
    context = {
        "filters": filters,
        "rows": rows,
        "total": total,
        "ages": AGES,
        "notices": _notices(request),
        **more,
    }
    return render(request, template, context)


def _notices(request: Request) -> list[str]:
    # Only counts come through the URL: a crafted link cannot put words on the page.
    notices = []
    for key, text in NOTICES.items():
        value = request.query_params.get(key, "")
        if value.isdigit() and len(value) < 10:
            notices.append(text.format(int(value)))
    return notices
