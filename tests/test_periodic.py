"""Periodic schedules: their slots, the catch-up policy, and validation (no database)."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sqla_jobs import ConfigurationError, JobContext, Task, periodic
from sqla_jobs.periodic import (
    CatchUp,
    Periodic,
    build_periodic,
    checked_schedules,
    registered_schedules,
    unregister,
)
from sqla_jobs.periodic_listing import format_schedules
from tests.processes import REPO


class Report(Task, name="tests.periodic.report"):
    day: str = "today"

    async def run(self, ctx: JobContext) -> None:
        return None


class Abstract(Task, name="tests.periodic.abstract"):
    pass


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule(
    *,
    cron: str | None = None,
    every: timedelta | None = None,
    timezone: str = "UTC",
    catch_up: CatchUp = "one",
) -> Periodic:
    return build_periodic(
        Report(), name="s", cron=cron, every=every, timezone=timezone, catch_up=catch_up
    )


@pytest.fixture
def declared() -> Iterator[list[str]]:
    """Names the test declares; unregistered afterwards, so no other test's worker runs them."""
    names: list[str] = []
    yield names
    for name in names:
        unregister(name)


def test_hourly_cron_in_paris_stays_hourly_across_the_spring_dst_change() -> None:
    hourly = schedule(cron="0 * * * *", timezone="Europe/Paris")
    slots = hourly.slots_between(at("2026-03-28T22:30"), at("2026-03-29T02:30"), limit=10)
    assert slots == [
        at("2026-03-28T23:00"),
        at("2026-03-29T00:00"),
        at("2026-03-29T01:00"),
        at("2026-03-29T02:00"),
    ]
    local = [slot.astimezone(hourly.zone).strftime("%H:%M%z") for slot in slots]
    assert local == ["00:00+0100", "01:00+0100", "03:00+0200", "04:00+0200"]


def test_daily_cron_in_a_skipped_hour_runs_when_the_clocks_jump_and_once_when_repeated() -> None:
    daily = schedule(cron="30 2 * * *", timezone="Europe/Paris")
    spring = daily.slots_between(at("2026-03-27T12:00"), at("2026-03-30T12:00"), limit=10)
    assert [s.astimezone(daily.zone).strftime("%d %H:%M") for s in spring] == [
        "28 02:30",
        "29 03:00",
        "30 02:30",
    ]
    autumn = daily.slots_between(at("2026-10-24T12:00"), at("2026-10-26T12:00"), limit=10)
    assert autumn == [at("2026-10-25T00:30"), at("2026-10-26T01:30")]


def test_every_slots_are_multiples_of_the_interval_since_the_epoch() -> None:
    every = schedule(every=timedelta(minutes=5))
    assert every.latest_at_or_before(at("2026-01-01T10:07:30")) == at("2026-01-01T10:05")
    assert every.latest_at_or_before(at("2026-01-01T10:05")) == at("2026-01-01T10:05")
    assert every.next_after(at("2026-01-01T10:05")) == at("2026-01-01T10:10")
    assert every.slots_between(at("2026-01-01T10:00"), at("2026-01-01T10:12"), limit=9) == [
        at("2026-01-01T10:05"),
        at("2026-01-01T10:10"),
    ]


def test_cron_latest_slot_includes_the_instant_itself() -> None:
    hourly = schedule(cron="0 * * * *")
    assert hourly.latest_at_or_before(at("2026-01-01T10:00")) == at("2026-01-01T10:00")
    assert hourly.latest_at_or_before(at("2026-01-01T10:59:59.9")) == at("2026-01-01T10:00")
    assert hourly.next_after(at("2026-01-01T10:00")) == at("2026-01-01T11:00")


def test_a_slot_on_time_is_enqueued_whatever_the_policy() -> None:
    for policy in ("none", "one", timedelta(hours=1)):
        hourly = schedule(cron="0 * * * *", catch_up=policy)
        now = at("2026-01-01T10:00:00.2")
        assert hourly.slots_to_enqueue(after=at("2026-01-01T09:30"), now=now) == [
            at("2026-01-01T10:00")
        ]
        assert hourly.slots_to_enqueue(after=now, now=at("2026-01-01T10:30")) == []


def test_after_downtime_one_missed_slot_is_caught_up_by_default() -> None:
    hourly = schedule(cron="0 * * * *")
    # Down from 06:10 to 10:20: 07:00 to 10:00 were missed; 10:00 is the latest of them.
    slots = hourly.slots_to_enqueue(after=at("2026-01-01T06:10"), now=at("2026-01-01T10:20"))
    assert slots == [at("2026-01-01T10:00")]


def test_after_downtime_ending_at_a_slot_the_latest_missed_and_the_current_slot_run() -> None:
    hourly = schedule(cron="0 * * * *")
    slots = hourly.slots_to_enqueue(after=at("2026-01-01T06:10"), now=at("2026-01-01T10:00:05"))
    assert slots == [at("2026-01-01T09:00"), at("2026-01-01T10:00")]


def test_catch_up_none_skips_missed_slots() -> None:
    hourly = schedule(cron="0 * * * *", catch_up="none")
    assert hourly.slots_to_enqueue(after=at("2026-01-01T06:10"), now=at("2026-01-01T10:20")) == []
    assert hourly.slots_to_enqueue(after=at("2026-01-01T06:10"), now=at("2026-01-01T10:00:05")) == [
        at("2026-01-01T10:00")
    ]


def test_catch_up_window_enqueues_every_missed_slot_within_it() -> None:
    hourly = schedule(cron="0 * * * *", catch_up=timedelta(hours=2, minutes=30))
    slots = hourly.slots_to_enqueue(after=at("2026-01-01T06:10"), now=at("2026-01-01T10:20"))
    assert slots == [at("2026-01-01T08:00"), at("2026-01-01T09:00"), at("2026-01-01T10:00")]


def test_catch_up_window_never_goes_back_past_the_slot_handled_last() -> None:
    hourly = schedule(cron="0 * * * *", catch_up=timedelta(days=1))
    slots = hourly.slots_to_enqueue(after=at("2026-01-01T09:00"), now=at("2026-01-01T10:20"))
    assert slots == [at("2026-01-01T10:00")]


def test_catch_up_window_is_capped() -> None:
    every = schedule(every=timedelta(seconds=1), catch_up=timedelta(days=1))
    slots = every.slots_to_enqueue(after=at("2026-01-01T00:00"), now=at("2026-01-01T06:00"))
    assert len(slots) == 1000
    assert slots[-1] == at("2026-01-01T06:00")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "0 0 30 2 *"}, "'0 0 30 2 *'"),
        ({"cron": "0 * * * *", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"every": timedelta(0)}, "every must be a timedelta of at least one second"),
        ({"every": timedelta(seconds=-5)}, "every must be a timedelta of at least one second"),
        ({"every": 60}, "every must be a timedelta"),
        ({}, "pass exactly one of cron= and every="),
        ({"cron": "* * * * *", "every": timedelta(minutes=1)}, "exactly one of cron= and every="),
        ({"every": timedelta(hours=1), "timezone": "Europe/Paris"}, "cron schedules only"),
        ({"cron": "* * * * *", "catch_up": "all"}, "catch_up must be"),
        ({"cron": "* * * * *", "catch_up": timedelta(0)}, "catch_up must be"),
    ],
)
def test_a_bad_declaration_raises_at_once(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match="periodic schedule 'bad'") as raised:
        periodic(Report(), name="bad", **arguments)  # type: ignore[arg-type]  # wrong on purpose
    assert message in str(raised.value)
    assert "bad" not in registered_schedules()


def test_a_task_class_or_an_abstract_task_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="takes a Task instance"):
        periodic(Report, name="bad", cron="* * * * *")  # type: ignore[arg-type]  # on purpose
    with pytest.raises(ConfigurationError, match="does not implement run"):
        periodic(Abstract(), name="bad", cron="* * * * *")


def test_a_name_declared_twice_must_be_the_same_schedule(declared: list[str]) -> None:
    declared.append("tests.twice")
    first = periodic(Report(), name="tests.twice", cron="0 * * * *")
    periodic(Report(), name="tests.twice", cron="0 * * * *")  # a module imported again
    assert registered_schedules()["tests.twice"].definition == first.definition
    with pytest.raises(ConfigurationError, match="declared twice with different definitions"):
        periodic(Report(day="tomorrow"), name="tests.twice", cron="0 * * * *")
    with pytest.raises(ConfigurationError, match="two different periodic schedules"):
        checked_schedules([first, dataclasses.replace(first, cron="5 * * * *")])


def test_the_listing_shows_each_schedule_and_its_next_runs_in_its_time_zone() -> None:
    paris = build_periodic(
        Report(),
        name="hourly-report",
        cron="0 * * * *",
        every=None,
        timezone="Europe/Paris",
        catch_up="one",
    )
    text = format_schedules([paris], now=at("2026-01-01T10:20"), count=2)
    assert text.splitlines() == [
        "hourly-report  task=tests.periodic.report  cron 0 * * * *  timezone=Europe/Paris  "
        "catch_up=one",
        "    2026-01-01T12:00:00+01:00",
        "    2026-01-01T13:00:00+01:00",
    ]


IMPORT = ("--import", "tests.periodic_tasks")


def test_python_m_sqla_jobs_periodic_list_shows_the_declared_schedules() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "sqla_jobs", "periodic", "list", *IMPORT, "--count", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("tests.every-second  task=tests.periodic.tick  every 0:00:01")
    assert len(lines) == 4
    runs = [datetime.fromisoformat(line.strip()) for line in lines[1:]]
    assert [b - a for a, b in itertools.pairwise(runs)] == [timedelta(seconds=1)] * 2
