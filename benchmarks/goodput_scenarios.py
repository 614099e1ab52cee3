"""The goodput benchmark's five scenarios: what each runs, measures and aims for.

Each scenario runs one or two phases (``goodput_phase``) on a system's fleet and returns its
row of the scenario's table (``goodput_report``); ``SCENARIOS`` lists them with their
headings, extra columns, targets (checked on this project's rows) and notes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from goodput_cold import RateWatch, cold, timeline
from goodput_fair import fairness
from goodput_fleet import Fleet
from goodput_phase import Event, Phase, Send, constant, deadline, run_phase
from goodput_report import (
    LOST,
    TWICE,
    Row,
    Target,
    base_row,
    both_checks,
    common_checks,
    fmt,
    latencies,
    p95,
    reconverge,
    span,
    steady_rate,
)

RETRY_AFTER, QUOTA = "retry-after", "github"


@dataclass(frozen=True)
class Scale:
    """How big each scenario is (the full run, or ``--quick``)."""

    rate: float
    steady: int
    change_at: tuple[float, float]
    change_tail: float
    quota: int
    quiet: int
    y_tasks: int
    x_tasks: int
    cold_rate: float = 10.0
    cold_tasks: int = 300
    restart_tasks: int = 100
    idle_ttl: float = 3.0
    fair_tenants: int = 8  # quiet tenants under one app-wide limit
    fair_quiet: int = 40  # tasks each (their time alone: several passes of the backlog)
    fair_backlog: int = 400  # the noisy tenant's, enqueued first

    @property
    def noisy(self) -> int:
        """The noisy tenant's backlog: 10x the quiet one's."""
        return 10 * self.quiet

    @property
    def change_tasks(self) -> int:
        t1, t2 = self.change_at
        return round(self.rate * (t1 + (t2 - t1) / 2 + self.change_tail))


FULL = Scale(40.0, 280, (3.0, 9.0), 4.5, 120, 12, 20, 200)
QUICK = Scale(20.0, 40, (1.5, 4.0), 2.0, 30, 4, 6, 40, 10.0, 100, 40, 3.0, 4, 20, 80)


def backlog(fleet: Fleet, sc: Scale, tasks: int, dialect: str) -> Phase:
    """``tasks`` one-call tasks on the api queue against one upstream at L."""
    upstream = {"main": (sc.rate, dialect)}
    return run_phase(fleet, upstream, [Send("api", tasks)], deadline(tasks / sc.rate))


def steady(fleet: Fleet, sc: Scale) -> Row:
    phase = backlog(fleet, sc, sc.steady, RETRY_AFTER)
    row = base_row(fleet.system, phase, steady_rate(phase.calls["main"], constant(sc.rate)))
    row.checks = {
        **common_checks(row),
        "rate": row.rate,
        "429": row.share_429 * 100,
        "requeues": row.requeues,
    }
    return row


def change(fleet: Fleet, sc: Scale) -> Row:
    (t1, t2), low = sc.change_at, sc.rate / 2
    events = [Event(t1, low), Event(t2, sc.rate)]
    phase = run_phase(
        fleet,
        {"main": (sc.rate, RETRY_AFTER)},
        [Send("api", sc.change_tasks)],
        deadline(t2 + sc.change_tail),
        events,
    )
    start, calls = phase.start, phase.calls["main"]

    def limit_at(t: float) -> float:
        return low if start + t1 <= t < start + t2 else sc.rate

    row = base_row(fleet.system, phase, steady_rate(calls, limit_at))
    drop = reconverge(calls, start + t1, start + t2, low)
    rise = reconverge(calls, start + t2, max((t for t, _, _ in calls), default=start), sc.rate)
    row.unmeasured = {"drop": f">{t2 - t1:g}", "rise": "never"}
    row.extra = {
        "re-conv drop s": fmt(drop, ".1f", row.unmeasured["drop"]),
        "re-conv rise s": fmt(rise, ".1f", row.unmeasured["rise"]),
    }
    row.checks = {**common_checks(row), "drop": drop, "rise": rise}
    return row


def quota(fleet: Fleet, sc: Scale) -> Row:
    phase = backlog(fleet, sc, sc.quota, QUOTA)
    calls = phase.calls["main"]
    row = base_row(fleet.system, phase, steady_rate(calls, constant(sc.rate)))
    refused = sum(1 for _, _, s in calls if s == 429)
    row.extra = {"429s": str(refused)}
    row.checks = {**common_checks(row), "429s": float(refused), "requeues": row.requeues}
    return row


def tenants(fleet: Fleet, sc: Scale) -> Row:
    upstream = {"main": (sc.rate, RETRY_AFTER)}
    quiet = Send("quiet", sc.quiet, tenant="quiet")
    alone = run_phase(fleet, upstream, [quiet], deadline(sc.quiet / sc.rate))
    fleet.reset_limiter()
    noisy = Send("noisy", sc.noisy, tenant="noisy")
    both = run_phase(fleet, upstream, [noisy, quiet], deadline(11 * sc.quiet / sc.rate))
    noisy_rate = steady_rate(both.calls["main"], constant(sc.rate), {"noisy"})
    row = base_row(fleet.system, both, noisy_rate)
    solo, shared = p95(latencies(alone, "quiet")), p95(latencies(both, "quiet"))
    ratio = shared / solo if solo > 0 else None
    row.extra = {
        "quiet p95 alone s": fmt(solo),
        "quiet p95 s": fmt(shared),
        "p95 ratio": fmt(ratio),
    }
    row.checks = {**both_checks(row, base_row(fleet.system, alone, None)), "p95": ratio}
    return row


def integrations(fleet: Fleet, sc: Scale) -> Row:
    if fleet.system.ours:  # workers shared between integrations: max_sleepers 1, as
        fleet.shared = True  # docs/configuration.md advises (the last scenario: kept so)
        fleet.restart()
    with RateWatch(fleet, sc.rate):
        alone = run_phase(
            fleet,
            {"x": (sc.rate, RETRY_AFTER)},
            [Send("x", sc.x_tasks, upstream="x")],
            deadline(sc.x_tasks / sc.rate),
        )
    timeline(f"{fleet.system.label} X alone", alone.calls["x"], alone.start, 0.25)
    fleet.reset_limiter()
    slow = sc.rate / 10
    sends = [Send("y", sc.y_tasks, queue=1, upstream="y"), Send("x", sc.x_tasks, upstream="x")]
    ideal = max(sc.x_tasks / sc.rate, sc.y_tasks / slow)
    upstreams = {"x": (sc.rate, RETRY_AFTER), "y": (slow, RETRY_AFTER)}
    with RateWatch(fleet, sc.rate):
        both = run_phase(fleet, upstreams, sends, deadline(ideal))
    timeline(f"{fleet.system.label} X shared", both.calls["x"], both.start, 0.25)
    row = base_row(fleet.system, both, steady_rate(both.calls["x"], constant(sc.rate)))
    solo, shared = span(alone, "x"), span(both, "x")
    ratio = shared / solo if solo and shared else None
    y_done = sum(1 for i in both.groups["y"] if i in both.t_done)
    row.extra = {
        "X alone s": fmt(solo, ".1f"),
        "X shared s": fmt(shared, ".1f"),
        "X ratio": fmt(ratio),
        "Y done": f"{y_done}/{sc.y_tasks}",
    }
    row.checks = {**both_checks(row, base_row(fleet.system, alone, None)), "x": ratio}
    return row


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Fleet, Scale], Row]
    title: Callable[[Scale, int], str]
    extra: tuple[str, ...]
    targets: tuple[Target, ...]
    notes: tuple[str, ...]


RATE_T = Target("rate/L (steady state)", ">= 0.90", "rate", lambda v: v >= 0.9)
SHARE_T = Target("429 % (Retry-After only)", "<= 2.0", "429", lambda v: v <= 2.0, ".1f")
REQUEUE_T = Target("requeues/task", "<= 1.2", "requeues", lambda v: v <= 1.2)


def _heading(name: str, what: str) -> Callable[[Scale, int], str]:
    return lambda sc, n: f"{name}: {what.format(L=sc.rate, sc=sc)}, N={n} worker processes"


SCENARIOS = (
    Scenario(
        "steady",
        steady,
        _heading("steady", "L={L:g}/s (Retry-After, 1 s sliding window), T={sc.steady} tasks"),
        (),
        (RATE_T, SHARE_T, REQUEUE_T, LOST, TWICE),
        (
            "rate/L: served calls/s / L, from the limit found (the first 429 plus its 1 s "
            "Retry-After; with no 429, the first second at >= 90% of L) or the 10th "
            "percentile of served calls, to the 90th",
        ),
    ),
    Scenario(
        "change",
        change,
        _heading(
            "change",
            "L={L:g}/s, L/2 from t={sc.change_at[0]:g} s, L again from t={sc.change_at[1]:g} s "
            "(Retry-After), T={sc.change_tasks} tasks",
        ),
        ("re-conv drop s", "re-conv rise s"),
        (
            Target("re-converge after L halves", "<= 30 s", "drop", lambda v: v <= 30, ".1f"),
            Target("re-converge after L recovers", "<= 30 s", "rise", lambda v: v <= 30, ".1f"),
            LOST,
            TWICE,
        ),
        (
            "re-converged: the first 2 s window after the change serving >= 70% of the new L "
            "with <= 5% of its answers 429 (seconds after the change; '>' not within the "
            "phase, 'never': not before the tasks ran out)",
            "rate/L: over the limit in force at each moment",
        ),
    ),
    Scenario(
        "quota",
        quota,
        _heading(
            "quota", "L={L:g}/s published as X-RateLimit-* (1 s fixed window), T={sc.quota} tasks"
        ),
        ("429s",),
        (
            Target("429s with quota headers", "== 0", "429s", lambda v: v == 0, ".0f"),
            REQUEUE_T,
            LOST,
            TWICE,
        ),
        ("X-RateLimit-Limit/-Remaining/-Reset (epoch s) on every answer, Retry-After on a 429",),
    ),
    Scenario(
        "tenants",
        tenants,
        _heading(
            "tenants",
            "L={L:g}/s per tenant (Retry-After); the noisy tenant's {sc.noisy} tasks "
            "enqueued first, then the quiet tenant's {sc.quiet}",
        ),
        ("quiet p95 alone s", "quiet p95 s", "p95 ratio"),
        (Target("quiet p95 vs alone", "<= 2.00", "p95", lambda v: v <= 2.0), LOST, TWICE),
        (
            "latency: enqueue to completion; alone: the quiet backlog with no noisy tenant",
            "rate/L: the noisy tenant's; celery rate_limit is per task type, so both tenants "
            "share one L there",
        ),
    ),
    Scenario(
        "integrations",
        integrations,
        _heading(
            "integrations",
            "X: {sc.x_tasks} tasks, L={L:g}/s; Y (throttled): "
            "{sc.y_tasks} tasks, L/10, enqueued first; one queue each, same workers",
        ),
        ("X alone s", "X shared s", "X ratio", "Y done"),
        (Target("X time vs alone", "<= 1.10", "x", lambda v: v <= 1.1), LOST, TWICE),
        (
            "X time: first enqueue to last completion of X; X alone: the same X tasks on the "
            "same queue and workers without Y, just before; rate/L: X's; 429 %: X's and Y's "
            "answers; this project runs it with max_sleepers 1 (workers shared), X alone too",
        ),
    ),
    Scenario(
        "fairness",
        fairness,
        _heading(
            "fairness",
            "the app limited to L={L:g}/s in all (Retry-After); {sc.fair_tenants} quiet tenants "
            "x {sc.fair_quiet} tasks alone, then beside a noisy tenant's {sc.fair_backlog} "
            "enqueued first",
        ),
        ("quiet alone s", "quiet beside s", "worst ratio", "worst own ratio"),
        (
            Target("quiet tenant's time vs alone", "<= 1.50", "fair", lambda v: v <= 1.5),
            Target("429 % (app-wide limit passed)", "<= 2.0", "429", lambda v: v <= 2.0, ".1f"),
            LOST,
            TWICE,
        ),
        (
            "quiet: a tenant's first enqueue to its last completion; worst ratio: the largest "
            "quiet tenant's time beside the backlog over the quiet tenants' time alone (the last "
            "of them to finish); worst own ratio: the largest of a tenant's time beside over its "
            "own time alone; this project states the app-wide limit (app_limit L, fair share), "
            "the peers run with it as their limit",
        ),
    ),
    Scenario(
        "cold",
        cold,
        _heading(
            "cold",
            "L={sc.cold_rate:g}/s (Retry-After), this project from L/5 with max_rate 10 L, "
            "T={sc.cold_tasks} tasks; then stopped {sc.idle_ttl:g} x 2 s (idle_ttl "
            "{sc.idle_ttl:g} s) and started again on {sc.restart_tasks} tasks",
        ),
        ("to 0.9L s", "overall/L", "learned/L", "restart 2 s/L"),
        (
            Target("first enqueue to 0.9 L", "<= 4.0 s", "reach", lambda v: v <= 4.0, ".1f"),
            Target("goodput over the run / L", ">= 0.88", "overall", lambda v: v >= 0.88),
            Target("429 %", "<= 1.0", "429", lambda v: v <= 1.0, ".1f"),
            Target("requeues/task", "<= 1.15", "requeues", lambda v: v <= 1.15),
            Target("restart: first 2 s / learned", ">= 0.90", "restart", lambda v: v >= 0.9),
            LOST,
            TWICE,
        ),
        (
            "to 0.9L: first enqueue to the first 1 s of calls serving 90% of L; overall: "
            "tasks completed / wall time / L; rate/L as in steady",
            "learned/L: this project's rate when it stopped; restart 2 s/L: calls served in "
            "the first 2 s after the first call once started again; its target is against "
            "the learned rate; lost/twice over both phases",
        ),
    ),
)
