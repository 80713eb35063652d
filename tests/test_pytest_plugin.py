"""The pytest plugin, run as an application's test suite would run it (pytester)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from tests.helpers import TestDatabase

pytest_plugins = ["pytester"]

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"

APPLICATION_TESTS = """
import pytest
from sqlalchemy.orm import Session

from sqla_jobs import JobContext, Task, enqueue
from sqla_jobs.testing import assert_enqueued, refute_enqueued


class Greet(Task, name="plugin_app.greet"):
    who: str

    def run(self, ctx: JobContext) -> None:
        if self.who == "nobody":
            raise ValueError("there is nobody to greet")


def test_leaves_a_job_behind(sqla_jobs_engine):
    with Session(sqla_jobs_engine) as session:
        session.add(enqueue(Greet(who="left behind")))
        session.commit()


def test_starts_clean(sqla_jobs_clean, sqla_jobs_engine):
    with Session(sqla_jobs_engine) as session:
        refute_enqueued(session, Greet)


def test_drains_what_it_enqueued(sqla_jobs_clean, sqla_jobs_engine, sqla_jobs_drain):
    with Session(sqla_jobs_engine) as session:
        session.add(enqueue(Greet(who="a")))
        session.add(enqueue(Greet(who="b")))
        session.commit()
        assert_enqueued(session, Greet, who="a")
    summary = sqla_jobs_drain(tasks=[Greet], raise_failures=True)
    assert (summary.succeeded, summary.failed) == (2, 0)


def test_a_failing_job_fails_the_test(sqla_jobs_clean, sqla_jobs_engine, sqla_jobs_drain):
    with Session(sqla_jobs_engine) as session:
        session.add(enqueue(Greet(who="nobody")))
        session.commit()
    sqla_jobs_drain(tasks=[Greet], raise_failures=True)
"""


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    [plugin] = [entry for entry in entry_points(group="pytest11") if entry.name == "sqla_jobs"]
    assert plugin.value == "sqla_jobs.pytest_plugin"


def test_fixtures_clean_and_drain_the_configured_database(
    pytester: pytest.Pytester, database: TestDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SQLA_JOBS_PYTEST_DATABASE_URL", raising=False)
    pytester.makeini(f"{INI}sqla_jobs_database_url = {database.sync_url}\n")
    pytester.makepyfile(test_application=APPLICATION_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*JobFailedError: 1 job failed:",
            "*- job * (plugin_app.greet):",
            "*ValueError: there is nobody to greet",
        ]
    )


def test_the_option_then_the_environment_then_the_ini_name_the_database(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQLA_JOBS_PYTEST_DATABASE_URL", "sqlite:///from-env.db")
    pytester.makeini(f"{INI}sqla_jobs_database_url = sqlite:///from-ini.db\n")
    pytester.makepyfile(
        test_application="""
        import os

        def test_url(sqla_jobs_database_url):
            assert sqla_jobs_database_url == os.environ["EXPECTED_URL"]
        """
    )
    for argument, expected in [
        ("--sqla-jobs-database-url=sqlite:///from-option.db", "sqlite:///from-option.db"),
        ("-q", "sqlite:///from-env.db"),
    ]:
        monkeypatch.setenv("EXPECTED_URL", expected)
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider", argument)
        result.assert_outcomes(passed=1)


def test_without_a_database_the_fixtures_say_how_to_name_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SQLA_JOBS_PYTEST_DATABASE_URL", raising=False)
    pytester.makepyfile(
        test_application="""
        def test_clean(sqla_jobs_clean):
            pass
        """
    )
    pytester.makeini(INI)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the sqla_jobs fixtures need a database: pass --sqla-jobs-*"])
