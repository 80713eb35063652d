"""Run an example's web server and its worker as one command, and stop both together.

The worker is the command a deployment would run (``python -m sqla_jobs.worker ...``), started
as a process of its own; the web server runs in this process. Ctrl-C or SIGTERM stops the web
server, then the worker (one SIGTERM: it finishes its running jobs), and the exit status is the
worker's.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DATABASE_VARIABLE = "SQLA_JOBS_DATABASE_URL"
EXAMPLE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class _Stopped(Exception):
    """Ctrl-C or SIGTERM reached the launcher."""


def require(*modules: str) -> None:
    """Exit with one sentence if a module the example needs is not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(
            f"this example needs {', '.join(missing)}: install the examples extra, "
            "pip install -e '.[examples]'"
        )


def database_url(driver: str) -> URL:
    """Return the PostgreSQL URL in ``SQLA_JOBS_DATABASE_URL``, on `driver`; exit if unusable.

    The worker reads the same variable, so the web app and the worker share one database.
    """
    value = os.environ.get(DATABASE_VARIABLE, "")
    try:
        url = make_url(value) if value else None
    except ArgumentError:
        url = None
    if url is None or url.get_backend_name() != "postgresql":
        sys.exit(
            f"this example runs on PostgreSQL: set {DATABASE_VARIABLE}, for example "
            f"export {DATABASE_VARIABLE}={EXAMPLE_URL}"
        )
    return url.set(drivername=driver)


def run(commands: Sequence[Sequence[str]], worker: Sequence[str], serve: Callable[[], None]) -> int:
    """Run each of `commands`, start `worker`, then `serve()` until a signal; return an exit code.

    Commands are written as the documentation shows them (``python -m ...``); ``python`` is
    replaced by this interpreter.
    """
    for command in commands:
        print(f"$ {' '.join(command)}", flush=True)
        if code := subprocess.run(_here(command), check=False).returncode:
            return code
    print(f"$ {' '.join(worker)} &", flush=True)
    # A session of its own: the terminal's Ctrl-C reaches only this process, which sends the
    # worker one SIGTERM (a second signal would make the worker cancel its running jobs).
    process = subprocess.Popen(_here(worker), start_new_session=True)
    previous = {signum: signal.signal(signum, _stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve()
    except _Stopped:
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        process.send_signal(signal.SIGTERM)
        code = process.wait()
    return code


def _here(command: Sequence[str]) -> list[str]:
    return [sys.executable, *command[1:]] if command[0] == "python" else list(command)


def _stop(signum: int, frame: FrameType | None) -> None:
    # Uvicorn handles the signal itself, then raises it again once it has shut down; Flask's
    # server does not handle it. Either way it ends here, as an exception out of `serve()`.
    raise _Stopped
