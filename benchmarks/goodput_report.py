"""The goodput benchmark's measures (from the upstream's answers and the tasks' records) and
its tables.

* **rate/L**: calls served (200) per second over the hidden limit, in the steady state:
  from the moment the limit was found (the end of the first congestion event, its first 429
  plus the 1 s ``Retry-After`` the upstream announces; with no 429, the first second serving
  90% of L) or the 10th percentile of served calls, whichever is later, to the 90th
  percentile (the ramp-up, the discovery of the limit and the tail left out).
* **429 %**: answers refused with 429 over all answers of the phase (every upstream).
* **requeues/task**: times a task went back to the broker (this project's requeues,
  Celery's and Dramatiq's retries), per task.
* **hops/task**: Celery only: deliveries a worker began to run, less one, per task: every
  broker hop (requeues, parking and recheck hops, stale copies dropped).
* **sleep w-s**: worker-seconds slept inside tasks (tenacity's waits, this project's
  in-worker waits).
* **lost**: tasks neither completed nor visibly failed when the phase ended (``?`` when it
  ended at its deadline with tasks still pending: lost or just slow); **left**: those
  pending tasks. **twice**: tasks whose body completed more than once, or whose call was
  served (200) more than once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from goodput_fleet import System
from goodput_phase import Phase
from text_table import table

Calls = list[tuple[float, str, int]]
WINDOW = 2.0  # seconds: the window in which re-convergence is judged (the L/2 phase lasts 6)
DISCOVERY = 1.0  # seconds: the Retry-After of the upstream's first 429 (its 1 s window)
CONVERGED = 0.7  # of the new limit, served in that window
STEP = 0.1


@dataclass
class Row:
    """One system's line in one scenario's table, and the values its targets check."""

    system: System
    wall: float
    rate: float | None
    share_429: float
    requeues: float
    hops: float | None  # broker hops per task (Celery only: deliveries counted)
    sleep: float
    lost: int | None
    left: int
    twice: int
    extra: dict[str, str] = field(default_factory=dict)
    checks: dict[str, float | None] = field(default_factory=dict)
    unmeasured: dict[str, str] = field(default_factory=dict)  # shown for a None check


def served_times(calls: Calls, buckets: set[str] | None = None) -> list[float]:
    return sorted(t for t, b, s in calls if s == 200 and (buckets is None or b in buckets))


def steady_rate(
    calls: Calls, limit_at: Callable[[float], float], buckets: set[str] | None = None
) -> float | None:
    """Served calls per second over the limit, in the steady state: from the moment the
    limit was found (``limit_found``) or the 10th percentile of served calls, whichever is
    later, to the 90th percentile."""
    times = served_times(calls, buckets)
    n = len(times)
    if n < 10:
        return None
    lo, hi = math.floor(0.1 * n), math.ceil(0.9 * n) - 1
    start, end = times[lo], times[hi]
    found = limit_found(calls, times, limit_at, buckets)
    if found is not None and start < found < end:
        start = found
    served = sum(1 for t in times if start <= t <= end)
    allowed = integrate(limit_at, start, end)
    return (served - 1) / allowed if allowed > 0 else None


def limit_found(
    calls: Calls,
    times: Sequence[float],
    limit_at: Callable[[float], float],
    buckets: set[str] | None,
) -> float | None:
    """The end of the first 429's ``Retry-After`` (the discovery of the limit is a
    transient, whenever the rate served passed 90% of it); with no 429, the first moment 1 s
    of served calls reached 90% of the limit."""
    refused = [t for t, b, s in calls if s == 429 and (buckets is None or b in buckets)]
    if refused:
        return min(refused) + DISCOVERY
    tail = 0
    for head, t in enumerate(times):
        while times[tail] <= t - 1.0:
            tail += 1
        if head - tail + 1 >= 0.9 * limit_at(t):
            return t
    return None


def integrate(limit_at: Callable[[float], float], start: float, end: float) -> float:
    steps = max(1, math.ceil((end - start) / 0.01))
    width = (end - start) / steps
    return sum(limit_at(start + (k + 0.5) * width) for k in range(steps)) * width


def share_429(calls: Calls) -> float:
    refused = sum(1 for _, _, s in calls if s == 429)
    return refused / len(calls) if calls else 0.0


def reconverge(calls: Calls, start: float, end: float, limit: float) -> float | None:
    """Seconds from ``start`` to the first ``WINDOW`` s window, within ``[start, end]``,
    serving >= 70% of ``limit`` with <= 5% of its answers 429; None if there is none."""
    ordered = sorted(calls)
    t = start
    while t + WINDOW <= end + 1e-9:
        window = [s for when, _, s in ordered if t <= when < t + WINDOW]
        served = sum(1 for s in window if s == 200)
        refused = len(window) - served
        if served >= CONVERGED * limit * WINDOW and refused <= 0.05 * len(window):
            return t - start
        t += STEP
    return None


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else math.nan


def latencies(phase: Phase, group: str) -> list[float]:
    return [phase.t_done[i] - phase.sent_at[i] for i in phase.groups[group] if i in phase.t_done]


def span(phase: Phase, group: str) -> float | None:
    """From the group's first enqueue to its last completion; None if any is unfinished."""
    ids = phase.groups[group]
    if any(i not in phase.t_done for i in ids):
        return None
    return max(phase.t_done[i] for i in ids) - min(phase.sent_at[i] for i in ids)


def base_row(system: System, phase: Phase, rate: float | None) -> Row:
    """The columns every scenario shares, from one phase."""
    ids = phase.ids
    finished = set(phase.done) | phase.failed
    left = sum(1 for i in ids if i not in finished)
    twice = max(sum(1 for n in phase.done.values() if n > 1), phase.served_twice)
    calls = [c for log in phase.calls.values() for c in log]
    return Row(
        system=system,
        wall=phase.end - phase.start,
        rate=rate,
        share_429=share_429(calls),
        requeues=phase.requeues / len(ids) if ids else 0.0,
        hops=(phase.deliveries - len(ids)) / len(ids) if ids and phase.deliveries else None,
        sleep=phase.sleep,
        lost=None if phase.timed_out and left else left,
        left=left,
        twice=twice,
    )


def fmt(value: float | None, spec: str = ".2f", missing: str = "-") -> str:
    return missing if value is None or math.isnan(value) else format(value, spec)


BASE_HEADERS = ["system", "wall s", "rate/L", "429 %", "requeues/task", "hops/task", "sleep w-s"]
TAIL_HEADERS = ["lost", "twice"]


def row_cells(row: Row, extra: Sequence[str]) -> list[str]:
    cells = [
        row.system.label,
        fmt(row.wall, ".1f"),
        fmt(row.rate),
        fmt(row.share_429 * 100, ".1f"),
        fmt(row.requeues),
        fmt(row.hops),
        fmt(row.sleep, ".1f"),
    ]
    cells += [row.extra.get(name, "-") for name in extra]
    lost = "?" if row.lost is None else str(row.lost)
    return [*cells, lost + (f" ({row.left} left)" if row.left else ""), str(row.twice)]


@dataclass(frozen=True)
class Target:
    """A goal for this project's rows: ``check`` reads the measured value from a row."""

    label: str
    goal: str
    key: str
    ok: Callable[[float], bool]
    spec: str = ".2f"


def print_scenario(
    title: str,
    notes: Sequence[str],
    rows: Sequence[Row],
    extra: Sequence[str],
    targets: Sequence[Target],
) -> None:
    """One scenario: its header, its table, the targets of this project's rows, its notes."""
    print(f"\n== {title}")
    headers = [*BASE_HEADERS, *extra, *TAIL_HEADERS]
    align = "l" + "r" * (len(headers) - 1)
    print(table(headers, [row_cells(r, extra) for r in rows], align))
    ours = [r for r in rows if r.system.ours]
    if ours and targets:
        print(f"\ntargets ({', '.join(r.system.label for r in ours)})")
        body = []
        for target in targets:
            cells = [target.label, target.goal]
            for row in ours:
                value = row.checks.get(target.key)
                verdict = "MISS" if value is None or not target.ok(value) else "PASS"
                shown = fmt(value, target.spec, row.unmeasured.get(target.key, "-"))
                cells.append(f"{shown} {verdict}")
            body.append(cells)
        heads = ["target", "goal", *(r.system.label for r in ours)]
        print(table(heads, body, "ll" + "r" * len(ours)))
    for note in notes:
        print(f"  note: {note}")


def common_checks(row: Row) -> dict[str, float | None]:
    if row.lost is None:
        row.unmeasured["lost"] = f"? ({row.left} left)"
    return {"lost": None if row.lost is None else float(row.lost), "twice": float(row.twice)}


def both_checks(row: Row, alone: Row) -> dict[str, float | None]:
    """Lost and run-twice over a scenario's two phases (the table shows the shared one)."""
    checks, before = common_checks(row), common_checks(alone)
    lost, earlier = checks["lost"], before["lost"]
    row.unmeasured.update(alone.unmeasured)
    return {
        "lost": None if lost is None or earlier is None else lost + earlier,
        "twice": (checks["twice"] or 0.0) + (before["twice"] or 0.0),
    }


LOST = Target("tasks lost", "== 0", "lost", lambda v: v == 0, ".0f")
TWICE = Target("tasks run twice", "== 0", "twice", lambda v: v == 0, ".0f")
