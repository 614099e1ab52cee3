"""Benchmark the operator tools at scale: 50k tenant keys of one integration in a private Redis.

Times, against issue 17's targets (on the development machine): ``status NAME --json`` and
one ``top`` refresh within 1 s, the full ``status`` (the table over every key) within 3 s;
and an exporter scrape. Each is timed in-process (the command's work) and, for the CLI,
as the command an operator types (a new process: the interpreter and imports included).
Beside them, the way the tools read keys before (one ``snapshot`` per key: two round trips,
one after another) on the same keys.

    python benchmarks/cli_scale.py [--tenants N] [--rounds R]

It starts its own ``redis-server`` (on ``PATH``) on a free port and stops it afterwards.
Misses are reported, never fatal.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis
from rich.console import Console
from text_table import table

from queue_ratelimit import IntegrationConfig, Limiter
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.cli_tables import status_table, top_table
from queue_ratelimit.inspection import activity, counts_by_key, read_keys, sort_keys
from queue_ratelimit.metrics import StateCollector
from queue_ratelimit.plans import plan_for

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "qrl-scale"
NAME = "crm"  # a custom integration: the tools read it by the plan the writers stored
CONFIG = IntegrationConfig(name=NAME, rate_limit_per_sec=5.0, burst_size=5.0, max_rate=50.0)
TARGETS = {"status NAME --json": 1.0, "top (one refresh)": 1.0, "status (every key)": 3.0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    port, workdir = _free_port(), tempfile.mkdtemp(prefix="qrl-scale-")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return server, url, workdir
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not answer within 30 s") from None
            time.sleep(0.05)


def _write(url: str, first: int, last: int) -> None:
    """Keys as workers leave them: one grant per tenant, a requeue counted on every 50th,
    a 429 on every 500th (run in a process of its own)."""
    limiter = Limiter(RedisBackend(url, prefix=PREFIX), {NAME: CONFIG})
    for i in range(first, last):
        tenant = f"workspace-{i:06d}"
        limiter.acquire(NAME, tenant)
        if i % 50 == 0:
            limiter.count(NAME, "requeues", tenant)
        if i % 500 == 0:
            limiter.on_backoff(NAME, tenant, retry_after=600.0)


def _populate(url: str, tenants: int) -> float:
    started = time.perf_counter()
    step = -(-tenants // 4)
    spans = [(i, min(i + step, tenants)) for i in range(0, tenants, step)]
    context = mp.get_context("spawn")
    workers = [context.Process(target=_write, args=(url, *span)) for span in spans]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def _best(run: Callable[[], object], rounds: int) -> tuple[float, float]:
    """The fastest and the median of ``rounds`` runs, in seconds."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def _command(url: str, *args: str) -> Callable[[], object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_RATELIMIT")}
    command = [sys.executable, "-m", "queue_ratelimit.cli", "--redis", url, "--prefix", PREFIX]

    def run() -> object:
        done = subprocess.run(
            [*command, *args],
            env={**env, "COLUMNS": "120", "LINES": "40"},
            cwd=tempfile.gettempdir(),  # no config file: the stored plan describes the keys
            capture_output=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed: {done.stderr.decode()}")
        return done

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("needs redis-server on PATH (Debian: apt-get install redis-server)")
        return 0
    server, url, workdir = _start_redis()
    try:
        print(f"redis-server {redis.Redis.from_url(url).info()['redis_version']} at {url}")
        print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.tenants:,} tenants")
        print(f"populated in {_populate(url, args.tenants):.1f} s (4 processes)\n")
        _measure(url, args.tenants, args.rounds)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _measure(url: str, tenants: int, rounds: int) -> None:
    backend = RedisBackend(url, prefix=PREFIX)
    limiter = Limiter(backend, {})  # no config here, as an operator's shell
    width = 120

    def status_json() -> object:
        return [state.row() for state in read_keys(limiter, backend, NAME)]

    def status_all() -> object:
        keys = read_keys(limiter, backend)
        console = Console(width=width, file=io.StringIO())
        console.print(status_table(sort_keys(keys, "name")[:50], "status", width))
        return keys

    before = counts_by_key(read_keys(limiter, backend, NAME))

    def top_refresh() -> object:
        keys = read_keys(limiter, backend, NAME)
        rates = activity(before, keys, 2.0)
        console = Console(width=width, file=io.StringIO())
        console.print(top_table(sort_keys(keys, "requeues", rates)[:33], rates, width))
        return keys

    collector = StateCollector(limiter, backend)

    def scrape() -> object:
        return list(collector.collect())

    rows = []
    for what, run, shell in (
        ("status NAME --json", status_json, ("status", NAME, "--json")),
        ("top (one refresh)", top_refresh, None),
        ("status (every key)", status_all, ("status",)),
        ("exporter scrape", scrape, None),
    ):
        fastest, median = _best(run, rounds)
        command = f"{_best(_command(url, *shell), rounds)[1]:.2f}" if shell else "-"
        target = TARGETS.get(what)
        verdict = "-" if target is None else ("met" if median <= target else "MISSED")
        rows.append([what, f"{fastest:.2f}", f"{median:.2f}", command, f"{target or '-'}", verdict])
    plan = plan_for(CONFIG)
    sample = [t for _, t in backend.scan(NAME)][:2000]
    started = time.perf_counter()
    for tenant in sample:
        backend.snapshot(NAME, tenant, plan)
    per_key = (time.perf_counter() - started) / len(sample)
    print(
        table(
            ["in-process", "fastest s", "median s", "as a command s", "target s", ""],
            rows,
            "lrrrrl",
        )
    )
    print(
        f"\nbefore (one snapshot per key, one after another): {per_key * 1e6:.0f} us a key, "
        f"{per_key * tenants:.1f} s for {tenants:,} keys; now {float(rows[0][2]):.2f} s "
        f"({per_key * tenants / float(rows[0][2]):.0f}x)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
