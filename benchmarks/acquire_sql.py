"""Decisions per second on a SQL store, against the store's bare transaction round trip.

For 1 and N processes, each in a loop on one shared key (a limit so large every call is
granted) for S seconds, side by side in one run:

* **bare**: the floor under any decision: SQLite's cheapest write transaction
  (``BEGIN IMMEDIATE; COMMIT``); PostgreSQL's round trip (``SELECT 1``);
* **one-row upsert**: a write transaction reading one row and writing 400 bytes back, the
  least I/O a decision can do (PostgreSQL: the row locked, in two round trips, the commit
  not waiting for the disk, as ours);
* **empty decision tx** (PostgreSQL): what every decision's transaction sends at least, in
  one round trip: ``BEGIN``, its bounded waits (``set_config``, PgBouncer-safe),
  ``SELECT 1``, ``COMMIT`` (SQLite's is the bare one);
* **rules alone**: ``Limiter.acquire`` on ``MemoryBackend`` in each process: the Python
  policy a SQL store runs, with no I/O;
* **queue_ratelimit**: ``Limiter.acquire`` on ``SQLiteBackend`` (one ``BEGIN IMMEDIATE``
  transaction) or ``PostgresBackend`` (one transaction in two round trips): the key's row,
  its integration's and its overrides read, the decision, the key written back;
* **claim_ahead**: the same store with ``claim_ahead=0.05`` (``?claim_ahead=0.05`` on its
  URL): a process that asks often has one transaction decide its next acquires' slots,
  each by the same rules, and hands them out without a round trip
  (``backends/sql_claims.py``).

Target: a decision at least 0.5x the bare round trip's rate. The last column bounds what
a decision per transaction can reach on one key: the key's row is held from its read to
its write (the serialisation per key the stores are built on), so each decision takes at
least a one-row read-and-write plus the rules, one after the other (both measured by one
process), whatever the number of processes; over the bare round trip. Claiming ahead is
how the stores pass it. ``acquire.py --store URL`` runs this script.

    python benchmarks/acquire_sql.py [--store sqlite:///PATH|postgresql://...] [--seconds S]
                                     [--procs N]
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.synchronize import Barrier
from typing import Any

from text_table import table

import queue_ratelimit
from queue_ratelimit import IntegrationConfig, Limiter
from queue_ratelimit.backends import POSTGRES_SCHEMES, SQLITE_SCHEME, open_backend

HUGE = 1_000_000_000
BARE, ROW = "bare round trip", "one-row upsert"
EMPTY, RULES = "empty decision tx", "rules alone"
OURS = "queue_ratelimit acquire"
CLAIMS = "claim_ahead 50 ms"
CLAIM_AHEAD = 0.05
TARGET = 0.5
PREFIX = "qrl-bench"


def _bare(store: str) -> Callable[[], None]:
    if store.startswith(POSTGRES_SCHEMES):
        import psycopg

        pg = psycopg.connect(store, autocommit=True)
        return lambda: pg.execute("SELECT 1").fetchone() and None
    path = store[len(SQLITE_SCHEME) :]
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")

    def call() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")

    return call


def _pg_row(store: str) -> Callable[[], None]:
    import psycopg

    conn = psycopg.connect(store, autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_row (k text PRIMARY KEY, v text)")
    conn.execute("INSERT INTO bench_row VALUES ('k', '') ON CONFLICT DO NOTHING")
    value = "x" * 400

    def call() -> None:
        with conn.pipeline():  # (as ours: two round trips, the commit not waiting for disk)
            conn.execute("BEGIN")
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute("SELECT v FROM bench_row WHERE k = 'k' FOR UPDATE").fetchone()
            conn.execute("UPDATE bench_row SET v = %s WHERE k = 'k'", (value,))
            conn.execute("COMMIT")

    return call


def _row(store: str) -> Callable[[], None]:
    if store.startswith(POSTGRES_SCHEMES):
        return _pg_row(store)
    path = store[len(SQLITE_SCHEME) :]
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_row (k TEXT PRIMARY KEY, v TEXT)")
    value = "x" * 400  # about a key's state

    def call() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT v FROM bench_row WHERE k = 'k'").fetchone()
        conn.execute(
            "INSERT INTO bench_row VALUES ('k', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            (value,),
        )
        conn.execute("COMMIT")

    return call


def _empty(store: str) -> Callable[[], None]:
    if not store.startswith(POSTGRES_SCHEMES):
        return _bare(store)  # (SQLite's least write transaction is the bare one)
    import psycopg

    conn = psycopg.connect(store, autocommit=True, prepare_threshold=5)

    def call() -> None:
        with conn.pipeline():  # (as a decision's: one round trip, bounded waits)
            conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            conn.execute(
                "SELECT set_config('lock_timeout', %s, true),"
                " set_config('statement_timeout', %s, true),"
                " set_config('synchronous_commit', %s, true)",
                ("5000", "10000", "off"),
            )
            conn.execute("SELECT 1")
            conn.execute("COMMIT")

    return call


def _rules(store: str) -> Callable[[], None]:
    config = IntegrationConfig("bench", rate_limit_per_sec=HUGE, burst_size=HUGE, max_rate=HUGE)
    limiter = Limiter(configs={"bench": config})  # (the memory backend: no I/O)

    def call() -> None:
        limiter.acquire("bench")

    return call


def _ours(store: str) -> Callable[[], None]:
    config = IntegrationConfig("bench", rate_limit_per_sec=HUGE, burst_size=HUGE, max_rate=HUGE)
    limiter = Limiter(open_backend(store, prefix=PREFIX), {"bench": config})

    def call() -> None:
        limiter.acquire("bench")

    return call


def _claims(store: str) -> Callable[[], None]:
    joint = "&" if "?" in store else "?"
    return _ours(f"{store}{joint}claim_ahead={CLAIM_AHEAD}")


def _loop(
    contender: str, store: str, seconds: float, start: Barrier, results: Any
) -> None:  # a process
    contenders = {BARE: _bare, ROW: _row, EMPTY: _empty, RULES: _rules, OURS: _ours}
    call = {**contenders, CLAIMS: _claims}[contender](store)
    for _ in range(50):  # warm up: connections, the schema, the key
        call()
    start.wait()
    calls, until = 0, time.perf_counter() + seconds
    while time.perf_counter() < until:
        call()
        calls += 1
    results.put(calls)


def measure(contender: str, store: str, procs: int, seconds: float) -> float:
    """Calls per second of ``procs`` processes together."""
    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(procs), ctx.Queue()
    workers = [
        ctx.Process(target=_loop, args=(contender, store, seconds, start, results))
        for _ in range(procs)
    ]
    for worker in workers:
        worker.start()
    total = sum(results.get(timeout=seconds + 120) for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds


def _verdict(rate: float, bare: float) -> str:
    ratio = rate / bare if bare else 0.0
    return f"{ratio:.2f} {'PASS' if ratio >= TARGET else 'MISS'}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--store", default=None, help="sqlite:///PATH or postgresql://... (default: a temp file)"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--procs", type=int, default=4, help="processes in the shared rows")
    args = parser.parse_args(argv)
    scratch = None
    if args.store is None:
        scratch = tempfile.mkdtemp(prefix="qrl-bench-")
        args.store = SQLITE_SCHEME + os.path.join(scratch, "bench.db")
    if not args.store.startswith((SQLITE_SCHEME, *POSTGRES_SCHEMES)):
        parser.error(f"--store: {args.store!r}: {SQLITE_SCHEME}PATH or postgresql://... only")
    backend: Any = open_backend(args.store, prefix=PREFIX)
    backend.create_schema()  # the tables, before anyone times anything
    backend.purge("bench")
    print(f"date          {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"python        {platform.python_version()}; cpus {os.cpu_count()}")
    if args.store.startswith(SQLITE_SCHEME):
        path = args.store[len(SQLITE_SCHEME) :]
        print(f"sqlite        {sqlite3.sqlite_version} at {path} (WAL, synchronous=NORMAL)")
    else:
        import psycopg

        with psycopg.connect(args.store) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        print(f"postgresql    {version[0] if version else '?'} at {backend.describe()}")
    print(f"library       queue_ratelimit {queue_ratelimit.__version__}")
    print(f"runs          {args.seconds:g} s each, one shared key\n")
    rows = []
    serial = 0.0  # decisions a second one key allows, its row held across each (1 process)
    for procs in sorted({1, args.procs}):
        bare = measure(BARE, args.store, procs, args.seconds)
        row = measure(ROW, args.store, procs, args.seconds)
        empty = measure(EMPTY, args.store, procs, args.seconds)
        rules = measure(RULES, args.store, procs, args.seconds)
        ours = measure(OURS, args.store, procs, args.seconds)
        claims = measure(CLAIMS, args.store, procs, args.seconds)
        if procs == 1 and row and rules:
            serial = 1.0 / (1.0 / row + 1.0 / rules)
        rows.append(
            [
                str(procs),
                f"{bare:,.0f}",
                f"{row:,.0f}",
                f"{empty:,.0f}",
                f"{rules:,.0f}",
                f"{ours:,.0f}",
                f"{claims:,.0f}",
                _verdict(ours, bare),
                _verdict(claims, bare),
                f"{serial / bare if bare else 0.0:.2f}",
            ]
        )
    headers = [
        "processes",
        f"{BARE} /s",
        f"{ROW} /s",
        f"{EMPTY} /s",
        f"{RULES} /s",
        f"{OURS} /s",
        f"{CLAIMS} /s",
        f"ours/bare (>= {TARGET})",
        f"claims/bare (>= {TARGET})",
        "best possible/bare",
    ]
    print(table(headers, rows, "rrrrrrrrrr"))
    backend.purge("bench")
    if scratch is not None:
        for name in os.listdir(scratch):
            os.remove(os.path.join(scratch, name))
        os.rmdir(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
