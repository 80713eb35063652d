"""The worker's lease: register, renew every `interval`, and unregister, from a thread of its own.

A job locked by a worker whose lease is alive is never taken from it, however long it runs;
other workers rescue its jobs only once it has been silent for `timeout` (see `rescuer`). The
lease is renewed from a thread with its own event loop and its own connection
(`store.lease.LeaseConnection`), so neither a job that blocks the worker's event loop nor jobs
that hold every pooled connection can make a live worker look dead. Nothing a job or a row can
throw reaches this thread: it only renews, and measures the worker loop's lag.

A worker that has not renewed for half of `timeout` must stop claiming (`is_fresh`). Once it
knows its lease is lost (its registration was deleted as dead, or `timeout` passed without a
renewal), the jobs it runs are no longer its own: `on_lost` is told the old lease id, and the
lease carries on under a new id, so guarded writes of the old jobs can never match a new claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from loguru import logger
from sqlalchemy.engine import URL

from sqla_jobs.store.lease import LeaseConnection
from sqla_jobs.store.retrying import DATABASE_ERRORS, GaveUp, retry_database, summarize_error

# A loop that runs a callback this late is blocked: say so, it delays every job.
LAG_WARNING = timedelta(seconds=1)


class Lease:
    """Hold the lease of worker `worker_id` while the worker runs."""

    def __init__(
        self,
        *,
        url: URL,
        worker_id: str,
        queues: Sequence[str],
        interval: timedelta,
        timeout: timedelta,
    ) -> None:
        self.worker_id = worker_id
        self._url = url
        self._queues = list(queues)
        self._interval = interval.total_seconds()
        self._timeout = timeout.total_seconds()
        self._holder = worker_id
        self._generation = 1
        self._is_registered = False
        self._renewed_at: float | None = None
        self._stopping = threading.Event()
        self._registered = threading.Event()
        self._unregister = True
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probe_sent: float | None = None
        self.on_lost: Callable[[str], None] | None = None
        """Called on the worker's event loop with the id of a lease that was lost."""
        self.died: BaseException | None = None
        """What ended the lease thread, if something did while the worker ran."""
        self.loop_lag = timedelta(0)
        """How late the worker's event loop last ran a callback of the lease thread's."""
        self.max_loop_lag = timedelta(0)
        """The worst `loop_lag` seen since the worker started."""

    @property
    def holder(self) -> str:
        """The id jobs are claimed under now: `worker_id`, or a successor after a lost lease."""
        return self._holder

    def is_fresh(self) -> bool:
        """Tell whether the lease was renewed within half of its timeout (claims are safe)."""
        renewed = self._renewed_at
        return (
            renewed is not None
            and time.monotonic() - renewed < self._timeout / 2
            and self.is_alive()
        )

    def is_alive(self) -> bool:
        """Tell whether the lease thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def seconds_since_renewal(self) -> float | None:
        """Return the seconds since the last renewal (None: never renewed)."""
        renewed = self._renewed_at
        return None if renewed is None else time.monotonic() - renewed

    async def start(self, *, wait: timedelta = timedelta(seconds=5)) -> None:
        """Start the lease thread; wait up to `wait` for the registration to be written."""
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._unregister = True
        self._thread = threading.Thread(
            target=self._main, name=f"sqla_jobs-lease-{self.worker_id}", daemon=True
        )
        self._thread.start()
        # Not fatal if the database is away: the thread keeps trying, and nothing is claimed
        # until the lease is written.
        await asyncio.to_thread(self._registered.wait, wait.total_seconds())

    async def stop(self, *, unregister: bool) -> None:
        """Stop renewing; with `unregister`, remove the registration (only once no job is held).

        Without it the registration stays: it falls silent, and the jobs still locked under it
        are rescued once `timeout` has passed.
        """
        self._unregister = unregister
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self._interval + 10.0)
            self._thread = None

    def _main(self) -> None:
        try:
            asyncio.run(self._renew_until_stopped())
        except BaseException as exc:
            # Never expected (each beat catches everything); the worker sees `died` and stops.
            self.died = exc
            logger.opt(exception=exc).critical("lease thread died", worker_id=self.worker_id)

    async def _renew_until_stopped(self) -> None:
        connection = LeaseConnection(self._url, timeout=timedelta(seconds=self._timeout / 2))
        try:
            while not self._stopping.is_set():
                await self._beat(connection)
                await asyncio.to_thread(self._stopping.wait, self._interval)
            if self._unregister and self._is_registered:
                await self._unregister_from(connection)
        finally:
            await connection.close()

    async def _beat(self, connection: LeaseConnection) -> None:
        try:
            self._measure_lag()
            await self._renew(connection)
        except DATABASE_ERRORS as exc:
            logger.warning(
                "lease not renewed", worker_id=self._holder, error=summarize_error(str(exc))
            )
        except Exception as exc:
            logger.opt(exception=exc).error("lease renewal crashed; carrying on")
        since = self.seconds_since_renewal()
        if self._is_registered and since is not None and since >= self._timeout:
            self._lose(f"not renewed for {since:.3g} s, over the heartbeat timeout")

    async def _renew(self, connection: LeaseConnection) -> None:
        # Counted from before the statement is sent: a renewal is never credited late.
        sent = time.monotonic()
        if self._is_registered:
            if await connection.renew(self._holder):
                self._renewed_at = sent
                return
            self._lose("its registration was removed as dead by another worker")
        await connection.register(self._holder, self._queues)
        self._is_registered = True
        self._renewed_at = sent
        self._registered.set()

    def _lose(self, why: str) -> None:
        lost = self._holder
        self._generation += 1
        self._holder = f"{self.worker_id}~{self._generation}"
        self._is_registered = False
        self._renewed_at = None
        logger.error(
            "lease lost; jobs running under it are no longer this worker's",
            worker_id=lost,
            reason=why,
            new_worker_id=self._holder,
        )
        loop, on_lost = self._loop, self.on_lost
        if loop is not None and on_lost is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(on_lost, lost)

    async def _unregister_from(self, connection: LeaseConnection) -> None:
        holder = self._holder
        try:
            await retry_database(
                lambda: connection.unregister(holder), what="unregistering failed", attempts=3
            )
        except GaveUp as exc:
            # Harmless: the registration falls silent and other workers delete it.
            logger.warning(
                "unregistering failed", error=summarize_error(str(exc.__cause__)), worker_id=holder
            )

    def _measure_lag(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        now = time.monotonic()
        if self._probe_sent is not None:
            # The last probe has not run yet: the loop is at least this late.
            self._record_lag(now - self._probe_sent)
            return
        self._probe_sent = now
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(self._probe_arrived, now)

    def _probe_arrived(self, sent: float) -> None:
        self._probe_sent = None
        self._record_lag(time.monotonic() - sent)

    def _record_lag(self, seconds: float) -> None:
        self.loop_lag = timedelta(seconds=seconds)
        self.max_loop_lag = max(self.max_loop_lag, self.loop_lag)
        if self.loop_lag >= LAG_WARNING:
            logger.warning(
                "event loop blocked; a job may be running blocking code in an async run()",
                worker_id=self.worker_id,
                lag=round(seconds, 3),
            )
