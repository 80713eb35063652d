"""The plain application rows of scenario 7: one shaped like a job (no queue), an order."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Float, Integer, MetaData, String, Text, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_jobs.clock import UTCDateTime, db_now
from sqla_jobs.models import JSONObject, Payload


class BenchBase(DeclarativeBase):
    """The benchmark's own metadata, apart from sqla_jobs' (its migrations never see it)."""

    metadata = MetaData()
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), JSONObject: Payload}


class BenchRow(BenchBase):
    """An application's row with `sqla_jobs_job`'s columns and types (and mapper options).

    Only its primary key is indexed and no trigger fires: what the job table costs beyond this
    (its claim indexes, the NOTIFY trigger, the task's payload validation) is the price of a
    queue, which scenario 7 measures.
    """

    __tablename__ = "bench_orm_row"
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012 - as Job's

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255))
    payload: Mapped[JSONObject]
    queue: Mapped[str] = mapped_column(String(255), server_default="default")
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    run_at: Mapped[datetime] = mapped_column(server_default=db_now())
    created_at: Mapped[datetime] = mapped_column(server_default=db_now())
    context: Mapped[str] = mapped_column(Text, server_default="")
    error_count: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error_message: Mapped[str | None] = mapped_column(Text)
    last_failed_at: Mapped[datetime | None]
    locked_by: Mapped[str | None] = mapped_column(String(255))
    locked_at: Mapped[datetime | None]
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    cancel_reason: Mapped[str | None] = mapped_column(Text)


class BenchOrder(BenchBase):
    """The application's own row of a business transaction (an order) in scenario 7."""

    __tablename__ = "bench_order"
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012 - as Job's

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    customer: Mapped[str] = mapped_column(String(255))
    amount_cents: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=db_now())


def bench_row(n: int) -> BenchRow:
    """The row `enqueue(NoOp(n=n))` would insert, as a plain mapped object."""
    return BenchRow(
        id=uuid.uuid4(),
        name="bench.noop",
        payload={"n": n},
        queue="bench",
        priority=0,
        context="",
        error_count=0,
        timeout_seconds=None,
    )
