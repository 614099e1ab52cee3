"""Goodput against an upstream with a hidden limit: this project against its peers, end to end.

A local upstream (``HiddenLimitUpstream``) allows L calls per 1 s window per bucket and
answers 429 beyond that. Real workers (N processes, on Redis) run one-call tasks from a
backlog enqueued at once; the client does not know L. Every system runs these scenarios:

* **steady**: T tasks, L fixed, ``Retry-After`` only;
* **change**: L halves mid-run and later recovers (time to re-converge after each change);
* **quota**: the upstream publishes ``X-RateLimit-*`` quota headers (GitHub dialect);
* **tenants**: two tenants, each with its own hidden L, one with a 10x backlog enqueued
  first: the quiet tenant's p95 latency against running alone;
* **integrations**: two integrations sharing the workers, one throttled (hidden L/10): the
  other's completion time against running alone;
* **fairness**: one app-wide L over every tenant; quiet tenants beside a noisy tenant's
  backlog enqueued first, against running alone (``goodput_fair``);
* **cold**: a fleet that does not know L, then started again (``goodput_cold``).

    python benchmarks/goodput.py [--quick] [--only SYSTEM,...,SCENARIO,...] [--redis URL]
                                 [--workers N] [--rate L]

Systems: a ours/celery, b celery rate_limit, c celery+tenacity, d dramatiq bucket,
e1 rq+tenacity, e2 rq RateLimit, f1 ours/dramatiq, f2 ours/rq (codes or labels in
``--only``). Measures are explained in ``goodput_report``; the systems' configurations are
printed with the results. Keys live under a per-run prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import secrets
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

import redis
from goodput_common import OURS_MAX_FACTOR, OURS_START_FRACTION, ours_config
from goodput_fleet import SYSTEMS, Fleet, System, fleet_for
from goodput_report import Row, fmt, print_scenario
from goodput_scenarios import FULL, QUICK, SCENARIOS, Scale, Scenario

import queue_ratelimit


def _pick(only: str | None) -> tuple[list[System], list[Scenario]]:
    words = {w.strip() for w in (only or "").split(",") if w.strip()}
    names = {s.name for s in SCENARIOS}
    codes = {w for w in words if w not in names}
    unknown = codes - {s.code for s in SYSTEMS} - {s.label for s in SYSTEMS}
    if unknown:
        raise SystemExit(
            f"--only: unknown {sorted(unknown)}; systems "
            f"{[s.code for s in SYSTEMS]}, scenarios {sorted(names)}"
        )
    systems = [s for s in SYSTEMS if not codes or s.code in codes or s.label in codes]
    scenarios = [s for s in SCENARIOS if not (words & names) or s.name in words]
    return systems, scenarios


def run_system(
    system: System, scenarios: Sequence[Scenario], args: argparse.Namespace, sc: Scale, run: str
) -> dict[str, Row]:
    """Every scenario on one fleet of workers (started once, stopped and purged at the end)."""
    fleet = fleet_for(system, args.redis, run, args.workers, sc.rate)
    rows: dict[str, Row] = {}
    try:
        fleet.start()
        _run_scenarios(fleet, scenarios, sc, rows)
    except Exception:  # one system's failure must not lose the others' results
        log(f"  {system.label}: failed:\n{traceback.format_exc()}")
    finally:
        fleet.stop()
    return rows


def _run_scenarios(
    fleet: Fleet,
    scenarios: Sequence[Scenario],
    sc: Scale,
    rows: dict[str, Row],
) -> None:
    """Each scenario in turn; a fleet with a dead worker is restarted clean."""
    for scenario in scenarios:
        began = time.monotonic()
        rows[scenario.name] = row = scenario.run(fleet, sc)
        took = time.monotonic() - began
        log(
            f"  {fleet.system.label:18} {scenario.name:12} {took:5.1f} s  wall {row.wall:5.1f} s"
            f"  rate/L {fmt(row.rate)}  429 {row.share_429 * 100:4.1f}%"
        )
        if not fleet.alive():
            log(f"  {fleet.system.label}: a worker died: restarting the fleet")
            fleet.restart()
        fleet.reset_limiter()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_header(args: argparse.Namespace, sc: Scale, systems: Sequence[System]) -> None:
    server: dict[str, Any] = redis.Redis.from_url(args.redis).info("server")  # type: ignore[assignment]
    where = os.path.dirname(queue_ratelimit.__file__ or "?")
    print(f"date          {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"python        {platform.python_version()}; cpus {os.cpu_count()}")
    print(f"redis-server  {server['redis_version']} at {args.redis} (broker and state)")
    print(f"library       queue_ratelimit {queue_ratelimit.__version__} from {where}")
    print(f"workers       N={args.workers} processes per system; hidden limit L={sc.rate:g}/s")
    cfg = ours_config("x", sc.rate)
    print(
        f"ours          start {OURS_START_FRACTION:g} L = {cfg.rate_limit_per_sec:g}/s, "
        f"max_rate {OURS_MAX_FACTOR:g} L = {cfg.max_rate:g}/s, burst {cfg.burst_size:g}, "
        f"increase {cfg.increase_factor:g}/success, decrease x{cfg.decrease_factor:g}, "
        f"max_wait {cfg.max_wait:g} s, other settings the library's defaults (the same for "
        f"every integration); max_sleepers 1 in the integrations scenario (workers shared)"
    )
    print("\nsystems")
    for system in systems:
        print(f"  {system.code:3} {system.label:18} {system.note}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--quick", action="store_true", help="small scale, for development")
    parser.add_argument("--only", help="comma-separated systems (codes) and/or scenarios")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (N)")
    parser.add_argument("--rate", type=float, help="the hidden limit L (default 40, quick 20)")
    args = parser.parse_args(argv)
    sc = QUICK if args.quick else FULL
    if args.rate:
        sc = dataclasses.replace(sc, rate=args.rate)
    systems, scenarios = _pick(args.only)
    run = f"gpb{secrets.token_hex(3)}"
    began = time.monotonic()
    print_header(args, sc, systems)
    results: dict[str, dict[str, Row]] = {s.name: {} for s in scenarios}
    for system in systems:
        for name, row in run_system(system, scenarios, args, sc, run).items():
            results[name][system.code] = row
    for scenario in scenarios:
        done = results[scenario.name]
        rows = [done[s.code] for s in systems if s.code in done]
        missing = [s.label for s in systems if s.code not in done]
        notes = (*scenario.notes, *([f"no result (see stderr): {missing}"] if missing else []))
        print_scenario(
            scenario.title(sc, args.workers), notes, rows, scenario.extra, scenario.targets
        )
    print(f"\ntotal {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
