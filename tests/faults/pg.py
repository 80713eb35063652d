"""A throw-away PostgreSQL cluster of the test run's own, which fault tests may stop and break.

The shared test server is never restarted or broken: other tests (and other engineers) use it.
This one lives in a temporary directory, listens on a free port of 127.0.0.1, and is removed at
the end of the session. PostgreSQL refuses to run as root, so as root every server command runs
as the ``postgres`` OS user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from sqla_jobs.urls import to_async_url, to_sync_url

BIN_DIR_ENV_VAR = "SQLA_JOBS_TEST_PG_BIN"
SERVER_USER = "postgres"
WORKER_ROLE = "sqla_jobs_worker"
"""The role worker processes log in as, so their backends can be told from the test's own."""


def find_bin_dir() -> Path | None:
    """Return the directory holding initdb and pg_ctl, or None if there is none."""
    candidates = [os.environ.get(BIN_DIR_ENV_VAR, "")]
    if pg_config := shutil.which("pg_config"):
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(result.stdout.strip())
    # Debian installs server binaries outside PATH, one directory per major version.
    candidates += sorted(
        (str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in candidates:
        if candidate and all((Path(candidate) / b).is_file() for b in ("initdb", "pg_ctl")):
            return Path(candidate)
    return None


def _free_port() -> int:
    # Racy in theory (another process could take it before the server binds), harmless here:
    # pg_ctl would then fail loudly at start.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory: start, stop, restart, break connections."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base_dir = Path(tempfile.mkdtemp(prefix="sqla_jobs_pg_"))
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "server.log"
        self.port = _free_port()
        self._as_server_user = os.geteuid() == 0
        if self._as_server_user:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.base_dir, user.pw_uid, user.pw_gid)
        self.admin_url = URL.create(
            "postgresql", username="postgres", host="127.0.0.1", port=self.port, database="postgres"
        )
        # NullPool: a restart breaks every connection, so none is kept between statements.
        self._admin = create_engine(
            to_sync_url(self.admin_url),
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
            connect_args={"connect_timeout": 5},
        )

    def init(self) -> None:
        """Create the cluster, start it and add the worker role."""
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self.start()
        self.execute(f"CREATE ROLE {WORKER_ROLE} LOGIN SUPERUSER")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.base_dir} -c fsync=off -c max_connections=100"
        )
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w",
            "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server at once: `-m fast` disconnects every client and rolls back."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop the server (fast) and start it again."""
        self.stop()
        self.start()

    def is_running(self) -> bool:
        """Tell whether the server process is up."""
        result = self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False)
        return result.returncode == 0

    def terminate_backends(self, condition: str) -> list[int]:
        """Terminate every other backend where `condition` holds; return their pids.

        `condition` is SQL over ``pg_stat_activity`` written by the test itself, e.g.
        ``"usename = 'sqla_jobs_worker' AND query LIKE 'LISTEN%'"``.
        """
        # Materialised: in one WHERE clause the planner may call pg_terminate_backend before
        # the condition has ruled a row out, and kill backends (this one too) at random.
        sql = (
            f"WITH doomed AS MATERIALIZED ({self._backends_sql(condition)}) "
            "SELECT pid FROM doomed WHERE pg_terminate_backend(pid)"
        )
        with self._admin.connect() as connection:
            return list(connection.execute(text(sql)).scalars())

    def backend_pids(self, condition: str) -> list[int]:
        """Return the pids of the other client backends where `condition` holds (see above)."""
        with self._admin.connect() as connection:
            return list(connection.execute(text(self._backends_sql(condition))).scalars())

    def _backends_sql(self, condition: str) -> str:
        return (
            "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            f"AND backend_type = 'client backend' AND ({condition})"
        )

    def url(self, database: str, *, user: str = "postgres") -> URL:
        """Return the asyncpg URL of `database`, logged in as `user`."""
        return to_async_url(self.admin_url.set(database=database, username=user))

    def sync_url(self, database: str) -> URL:
        """Return the psycopg URL of `database` (for `migrate` and sync sessions)."""
        return to_sync_url(self.admin_url.set(database=database))

    def execute(self, sql: str) -> None:
        """Run `sql` outside a transaction (CREATE/DROP DATABASE cannot run inside one)."""
        with self._admin.connect() as connection:
            connection.execute(text(sql))

    def quote(self, name: str) -> str:
        """Quote `name` as an identifier."""
        return self._admin.dialect.identifier_preparer.quote_identifier(name)

    def destroy(self) -> None:
        """Stop the server if it runs and delete its directory."""
        self._admin.dispose()
        try:
            if self.data_dir.exists() and self.is_running():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _run(self, binary: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command: Sequence[str] = [str(self.bin_dir / binary), *args]
        if self._as_server_user:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.base_dir)
        if check and result.returncode != 0:
            log = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(
                f"{binary} failed ({result.returncode}): {result.stderr or result.stdout}\n{log}"
            )
        return result
