"""The worker command's start-up check: a stop signal that arrives meanwhile is not lost."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import make_url

from sqla_jobs.worker.preflight import StoppedWhileWaiting, check_database
from tests.helpers import TestDatabase


@contextlib.contextmanager
def _proxy_signalling_on_first_connection(host: str, port: int) -> Iterator[int]:
    """Forward TCP connections to `host`:`port`; SIGTERM this process as the first one opens.

    Yields the port to connect to.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    signalled = threading.Event()

    def pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def serve() -> None:
        with contextlib.suppress(OSError):  # the listener is closed at the end
            while True:
                client, _ = listener.accept()
                if not signalled.is_set():
                    signalled.set()
                    os.kill(os.getpid(), signal.SIGTERM)
                upstream = socket.create_connection((host, port))
                for source, target in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=(source, target), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
    assert signalled.is_set()


def test_a_stop_signal_while_the_database_answers_is_not_lost(pg_database: TestDatabase) -> None:
    # Regression: a SIGTERM that arrived while the check connected to a database that then
    # answered was dropped, and the worker started and ran on: a supervised child, signalled
    # directly and by its supervisor while starting, never stopped.
    url = make_url(pg_database.url)
    assert url.host is not None
    with (
        _proxy_signalling_on_first_connection(url.host, url.port or 5432) as port,
        pytest.raises(StoppedWhileWaiting),
    ):
        check_database(url.set(port=port), startup_timeout=timedelta(seconds=20))
