"""The goodput benchmark's cold-start scenario: a fleet that does not know the limit, and the
same fleet started again after its keys idled out.

* **cold**: the fleet is started afresh at a lower hidden limit (``Scale.cold_rate``, 10/s
  in the full run: the same backlog then lasts long enough for the start to matter, not
  only the one-second ``Retry-After`` of the first 429); this project starts at L/5 with
  ``max_rate`` 10 L and knows nothing of L. Measured: the time from the first enqueue to
  the first second serving 90% of L, the goodput over the whole run (tasks per second over
  L), the 429 share and requeues per task.
* **restart**: the fleet is then stopped (its limiter keys kept), left idle for twice its
  ``idle_ttl`` (shortened to ``Scale.idle_ttl`` seconds for the scenario), and started again
  on a second backlog: the rate served over the first 2 s of calls, against the rate the
  limiter had learned when it stopped (this project) or against L (the peers, which keep
  nothing).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING

import goodput_common as common
from goodput_fleet import Fleet
from goodput_phase import Send, run_phase
from goodput_report import Calls, Row, base_row, common_checks, fmt, served_times, steady_rate

from queue_ratelimit import Limiter
from queue_ratelimit.backends.redis import RedisBackend

if TYPE_CHECKING:
    from goodput_scenarios import Scale

RETRY_AFTER = "retry-after"
START = 2.0  # seconds of calls after a restart over which the starting rate is measured


def timeline(label: str, calls: Calls, start: float, step: float = 1.0) -> None:
    """With ``GP_TIMELINE=1``: served and refused calls per ``step`` seconds, on stderr."""
    if os.environ.get("GP_TIMELINE") != "1":
        return
    seconds: dict[int, list[int]] = {}
    for t, _, status in calls:
        counts = seconds.setdefault(int((t - start) / step), [0, 0])
        counts[0 if status == 200 else 1] += 1
    cells = [
        f"{k * step:g}:{v[0]}" + (f"/{v[1]}x" if v[1] else "") for k, v in sorted(seconds.items())
    ]
    print(f"  {label}: " + " ".join(cells), file=sys.stderr)


def reach(calls: Calls, start: float, level: float) -> float | None:
    """Seconds from ``start`` to the first moment 1 s of served calls reached ``level``."""
    times = served_times(calls)
    tail = 0
    for head, t in enumerate(times):
        while times[tail] <= t - 1.0:
            tail += 1
        if head - tail + 1 >= level:
            return t - start
    return None


def start_rate(calls: Calls) -> float | None:
    """Calls served per second over the first ``START`` seconds after the first call."""
    if not calls:
        return None
    first = min(t for t, _, _ in calls)
    return sum(1 for t, _, s in calls if s == 200 and t < first + START) / START


def learned_rate(fleet: Fleet, rate: float) -> float | None:
    """The rate this project's limiter holds for the api integration (None for the peers)."""
    if not fleet.system.ours:
        return None
    api = fleet.queues[0]
    backend = RedisBackend(fleet.redis_url, prefix=fleet.run)
    try:
        limiter = Limiter(backend, {api: common.ours_config(api, rate)})
        snap = limiter.snapshot(api)
        return snap.limit().rate if snap.exists else None
    finally:
        backend.client.close()


class RateWatch:
    """With ``GP_TIMELINE=1``, this project's limiter rate every 0.25 s, printed after."""

    def __init__(self, fleet: Fleet, rate: float) -> None:
        self.fleet, self.rate, self.seen = fleet, rate, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> RateWatch:
        if os.environ.get("GP_TIMELINE") == "1" and self.fleet.system.ours:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
            begin = self.seen[0][0] if self.seen else 0.0
            cells = [f"{t - begin:.2f}:{r:.1f}" for t, r in self.seen]
            print(f"  {self.fleet.system.label} rates: " + " ".join(cells), file=sys.stderr)

    def _watch(self) -> None:
        while not self.stop.wait(0.25):
            rate = learned_rate(self.fleet, self.rate)
            self.seen.append((time.time(), rate or 0.0))


def cold(fleet: Fleet, sc: Scale) -> Row:
    L = sc.cold_rate
    fleet.shared, fleet.rate, fleet.idle_ttl = False, L, sc.idle_ttl
    fleet.restart()  # the workers' config follows the new L; nothing learned kept
    upstream = {"main": (L, RETRY_AFTER)}
    with RateWatch(fleet, L):
        phase = run_phase(
            fleet, upstream, [Send("api", sc.cold_tasks)], 1.5 * sc.cold_tasks / L + 10
        )
    calls = phase.calls["main"]
    timeline(f"{fleet.system.label} cold", calls, phase.start)
    row = base_row(fleet.system, phase, steady_rate(calls, lambda t: L))
    found = reach(calls, phase.start, 0.9 * L)
    wall = phase.end - phase.start
    overall = len(phase.done) / wall / L if wall > 0 else None
    learned = learned_rate(fleet, L)

    fleet.stop(keep_limiter=True)  # stopped longer than idle_ttl, its keys kept in Redis
    time.sleep(2 * sc.idle_ttl)
    deadline = time.monotonic() + 30.0  # its keys forgotten (they live idle_ttl past debts)
    while learned_rate(fleet, L) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    fleet.start()
    with RateWatch(fleet, L):
        again = run_phase(
            fleet, upstream, [Send("api", sc.restart_tasks)], 1.5 * sc.restart_tasks / L + 10
        )
    timeline(f"{fleet.system.label} restart", again.calls["main"], again.start)
    began = start_rate(again.calls["main"])
    versus = learned if learned is not None else L
    restart = None if began is None else began / versus
    row.unmeasured = {"reach": "never", "restart": "-"}
    row.extra = {
        "to 0.9L s": fmt(found, ".1f", "never"),
        "overall/L": fmt(overall),
        "learned/L": fmt(None if learned is None else learned / L),
        "restart 2 s/L": fmt(None if began is None else began / L),
    }
    again_row = base_row(fleet.system, again, None)
    checks = common_checks(row)
    later = common_checks(again_row)
    row.checks = {
        "reach": found,
        "overall": overall,
        "429": row.share_429 * 100,
        "requeues": row.requeues,
        "restart": restart,
        "lost": None
        if checks["lost"] is None or later["lost"] is None
        else checks["lost"] + later["lost"],
        "twice": (checks["twice"] or 0.0) + (later["twice"] or 0.0),
    }
    fleet.rate, fleet.idle_ttl = sc.rate, 3600.0
    fleet.restart()  # as the other scenarios expect it
    return row
