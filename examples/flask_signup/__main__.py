"""``python -m examples.flask_signup``: migrate, start the worker, serve the app on :8000.

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
    "examples.flask_signup.tasks",
    "--state",
    "examples.flask_signup.tasks:mail_clients",
)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.flask_signup")
    parser.add_argument("--port", type=int, default=8000)
    port = parser.parse_args().port
    launch.require("flask", "flask_sqlalchemy")
    launch.database_url("postgresql+psycopg")  # one sentence now, rather than a failed start

    def serve() -> None:
        # Imported here: the app creates its table at import, after the migration ran.
        from examples.flask_signup.app import app

        app.run(host="127.0.0.1", port=port)

    return launch.run([MIGRATE], WORKER, serve)


if __name__ == "__main__":
    raise SystemExit(main())
