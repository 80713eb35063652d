"""Run the peers (PgQueuer, procrastinate) through the scenarios they share with sqla_jobs.

Each peer gets its own fresh database, created here and dropped after, even after a failure.
A peer whose package is not installed is reported as such and skipped.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType

from harness import BENCH_DIR, fresh_database, libpq_dsn, percentile
from sqlalchemy.engine import URL

# name on the command line -> (package to look for, the module that drives it, display name)
KNOWN_PEERS = {
    "pgqueuer": ("pgqueuer", "peer_pgqueuer", "PgQueuer"),
    "procrastinate": ("procrastinate", "peer_procrastinate", "procrastinate"),
}


@dataclass
class PeerResult:
    """One peer's figures; a figure is None when the peer lacks the scenario or was skipped."""

    name: str
    status: str = "ok"  # "ok", "not installed", or "failed: <error>"
    version: str = ""
    bulk_jobs_per_s: float | None = None
    drain_jobs_per_s: float | None = None
    drain_setting: str = ""
    drain_tries: dict[str, float] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None


def parse_peers(value: str) -> list[str]:
    """``pgqueuer,procrastinate`` or ``none`` -> the peer names, checked."""
    if value.strip().lower() in ("", "none"):
        return []
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = sorted(set(names) - set(KNOWN_PEERS))
    if unknown:
        raise SystemExit(f"unknown peers {unknown}; known: {', '.join(KNOWN_PEERS)}")
    return names


def run_peers(
    names: Sequence[str],
    admin_url: URL,
    *,
    bulk: int,
    drain: int,
    drain_rounds: int,
    latency_jobs: int,
    latency_interval: float,
    quick: bool,
) -> list[PeerResult]:
    results = []
    for name in names:
        package, module_name, display = KNOWN_PEERS[name]
        if importlib.util.find_spec(package) is None:
            print(f"peer {name}: not installed, skipped", file=sys.stderr)
            results.append(PeerResult(display, status="not installed"))
            continue
        module = importlib.import_module(module_name)
        result = PeerResult(display, version=module.version())
        started = time.perf_counter()
        try:
            with fresh_database(admin_url, f"sqla_jobs_bench_{name}") as url:
                asyncio.run(
                    _run_peer(module, libpq_dsn(url), result, bulk, (drain, drain_rounds), quick)
                )
                _run_latency(module, libpq_dsn(url), result, latency_jobs, latency_interval)
        except Exception as error:  # a peer's failure is reported, not the whole run's
            result.status = f"failed: {type(error).__name__}: {error}"
        took = time.perf_counter() - started
        print(f"peer {name} done in {took:.1f} s ({result.status})", file=sys.stderr)
        results.append(result)
    return results


async def _run_peer(
    module: ModuleType,
    dsn: str,
    result: PeerResult,
    bulk: int,
    drain: tuple[int, int],
    quick: bool,
) -> None:
    """Run a peer's bulk enqueue and each of its drain settings `drain[1]` times (the jobs,
    the rounds; the best round counts, as for sqla_jobs)."""
    await module.install(dsn)
    jobs, rounds = drain
    for _ in range(rounds):
        rate = bulk / await module.bulk_enqueue(dsn, bulk)
        result.bulk_jobs_per_s = max(result.bulk_jobs_per_s or 0.0, rate)
    for _ in range(rounds):
        for setting in module.drain_settings(quick):
            rate = jobs / await module.drain(dsn, jobs, setting)
            result.drain_tries[str(setting)] = max(result.drain_tries.get(str(setting), 0), rate)
    result.drain_setting, result.drain_jobs_per_s = max(
        result.drain_tries.items(), key=lambda item: item[1]
    )


def _run_latency(module: ModuleType, dsn: str, result: PeerResult, n: int, interval: float) -> None:
    stamps = BENCH_DIR / f".stamps-{uuid.uuid4().hex[:8]}"
    try:
        latencies = asyncio.run(module.latency(dsn, n, interval, stamps))
    finally:
        stamps.unlink(missing_ok=True)
    result.latency_p50_ms = percentile(latencies, 50)
    result.latency_p99_ms = percentile(latencies, 99)


# --- the side-by-side table and the targets -------------------------------------------


def _cell(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:,.1f}{unit}"


def format_comparison(figures: dict[str, float], results: Sequence[PeerResult]) -> str:
    """sqla_jobs, each peer and raw asyncpg side by side, as in the performance issue.

    `figures` holds bench.py's own rows by key: ``drain`` (best concurrency), ``bulk``
    (`enqueue_bulk`) and ``bulk_many`` (`enqueue_many`), each beside the peers' one bulk
    figure, ``p50``/``p99`` (enqueue-to-start, ms), and ``raw <key>`` for the raw baseline.
    """
    columns = ["sqla_jobs", *(r.name for r in results), "raw asyncpg"]
    lines = [
        ("drain, best setting (jobs/s)", "drain", lambda r: r.drain_jobs_per_s, " (batched)"),
        ("bulk enqueue, enqueue_bulk (jobs/s)", "bulk", lambda r: r.bulk_jobs_per_s, " (unnest)"),
        (
            "bulk enqueue, enqueue_many (jobs/s)",
            "bulk_many",
            lambda r: r.bulk_jobs_per_s,
            " (unnest)",
        ),
        ("enqueue->start p50 (ms)", "p50", lambda r: r.latency_p50_ms, ""),
        ("enqueue->start p99 (ms)", "p99", lambda r: r.latency_p99_ms, ""),
    ]
    table = [["", *columns]]
    for label, key, of_peer, raw_note in lines:
        peer_cells = [
            _cell(of_peer(r)) if r.status == "ok" else r.status.split(":")[0] for r in results
        ]
        raw = figures.get(f"raw {key}")
        table.append(
            [
                label,
                _cell(figures.get(key)),
                *peer_cells,
                _cell(raw) + (raw_note if raw is not None else ""),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    rendered = [
        "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row))
        for row in table
    ]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        if r.status == "ok":
            tries = ", ".join(f"{s}: {_cell(v)}" for s, v in r.drain_tries.items())
            rendered.append(f"{r.name} {r.version} drain tries (jobs/s): {tries}")
        elif r.status != "not installed":
            rendered.append(f"{r.name}: {r.status}")
    return "\n".join(rendered)


def format_targets(figures: dict[str, float], results: Sequence[PeerResult]) -> str:
    """The performance issue's targets, as ratios of this run's figures: met, missed or n/a."""
    pgqueuer = next((r for r in results if r.name == "PgQueuer" and r.status == "ok"), None)

    def ratio(ours: str, theirs: float | None) -> float | None:
        return figures[ours] / theirs if ours in figures and theirs else None

    checks: list[tuple[str, float | None, float, bool]] = [
        # (what, measured, bound, measured must be >= bound)
        (
            "drain >= 3x PgQueuer's best",
            ratio("drain", pgqueuer.drain_jobs_per_s if pgqueuer else None),
            3.0,
            True,
        ),
        ("drain >= 0.3x raw batched", ratio("drain", figures.get("raw drain")), 0.3, True),
        (
            "bulk enqueue >= 2x PgQueuer's",
            ratio("bulk", pgqueuer.bulk_jobs_per_s if pgqueuer else None),
            2.0,
            True,
        ),
        ("enqueue->start p50 <= 1.0 ms", figures.get("p50"), 1.0, False),
        ("enqueue->start p99 <= 2.0 ms", figures.get("p99"), 2.0, False),
        # The issue set 1.0 / 2.0 ms when raw asyncpg measured 0.6 / 0.8 ms, and asks for ratios
        # measured side by side: these stay fair on a machine whose commits are slower or faster.
        (
            "enqueue->start p50 <= 1.67x raw (1.0/0.6)",
            ratio("p50", figures.get("raw p50")),
            1.0 / 0.6,
            False,
        ),
        (
            "enqueue->start p99 <= 2.5x raw (2.0/0.8)",
            ratio("p99", figures.get("raw p99")),
            2.0 / 0.8,
            False,
        ),
        (
            "one-commit enqueue >= 0.95x plain ORM insert",
            ratio("orm", figures.get("raw orm")),
            0.95,
            True,
        ),
        ("worker peak RSS <= 100 MiB (concurrency 100)", figures.get("rss"), 100.0, False),
    ]
    lines = ["targets (this run's ratios):"]
    for what, measured, bound, at_least in checks:
        if measured is None:
            verdict, shown = "n/a", "-"
        else:
            met = measured >= bound if at_least else measured <= bound
            verdict, shown = ("met" if met else "MISSED"), f"{measured:.2f}"
        lines.append(f"  {what:<48} {shown:>8}  {verdict}")
    return "\n".join(lines)
