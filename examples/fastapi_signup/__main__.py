"""``python -m examples.fastapi_signup``: migrate, start the worker, serve the app on :8000.

The commands are the ones a deployment runs, each on its own; README.md beside this file
shows them.
"""

from __future__ import annotations

import argparse

from examples import launch

MIGRATE = ("python", "-m", "sqla_jobs", "migrate")
WORKER = (
    "python",
    "-m",
    "sqla_jobs.worker",
    "--import",
    "examples.fastapi_signup.tasks",
    "--state",
    "examples.fastapi_signup.tasks:mail_clients",
)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.fastapi_signup")
    parser.add_argument("--port", type=int, default=8000)
    port = parser.parse_args().port
    launch.require("fastapi", "uvicorn")
    launch.database_url("postgresql+asyncpg")  # one sentence now, rather than a failed start

    def serve() -> None:
        import uvicorn

        uvicorn.run("examples.fastapi_signup.app:app", host="127.0.0.1", port=port)

    return launch.run([MIGRATE], WORKER, serve)


if __name__ == "__main__":
    raise SystemExit(main())
