"""What every demo run shares and reports: the integrations' configs, signals recorded over
time, the summary, the chart."""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from queue_ratelimit import signals
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.tasks import TaskGate
from queue_ratelimit.testing import HiddenLimitUpstream

INTEGRATIONS = ("notion", "github")
PLOT_HINT = "plot= needs matplotlib: pip install matplotlib (or queue_ratelimit[plot])"


def demo_config(name: str) -> IntegrationConfig:
    """A cautious start (4/s) and a generous ceiling (200/s): the limiter must find the limit.

    ``max_wait`` covers the worker's threads at the starting rate (8 threads at 4/s), so
    the first tasks wait in the worker instead of reserving slots paced at 4/s for the
    whole backlog, which would hold the run to the starting rate. The start phase climbs
    to the hidden 20/s in about two seconds; past the first 429, an increase of 0.3/s per
    success probes above the limit it learned.
    """
    return IntegrationConfig(
        name=name,
        rate_limit_per_sec=4.0,
        burst_size=1.0,
        increase_factor=0.3,
        decrease_factor=0.7,
        min_rate=0.5,
        max_rate=200.0,
        max_wait=3.0,
        max_backoff=30.0,
    )


@dataclass(frozen=True)
class DemoSummary:
    """What one demo run achieved.

    Attributes:
        tasks: tasks enqueued (split evenly between the integrations).
        completed: tasks that finished successfully.
        failed: tasks that failed (e.g. ``RequeueBudgetExhausted``).
        seconds: from the first enqueue to the last task's end.
        hidden_limit: the upstream's limit per integration, calls per second.
        achieved_rate: per integration, calls served (200) per second of its run.
        ratio: per integration, ``achieved_rate / hidden_limit``.
        rejected_429: answers the upstream refused with 429.
        requeues: times a task went back to the broker (``task_requeued`` signals).
        backoffs: congestion events, i.e. multiplicative decreases, over both integrations.
        lost: tasks whose call the upstream never served (must be 0).
        duplicates: calls served more than once for one task (must be 0).
    """

    tasks: int
    completed: int
    failed: int
    seconds: float
    hidden_limit: float
    achieved_rate: Mapping[str, float]
    ratio: Mapping[str, float]
    rejected_429: int
    requeues: int
    backoffs: int
    lost: int
    duplicates: int

    @property
    def requeues_per_task(self) -> float:
        """Requeues per enqueued task."""
        return self.requeues / self.tasks

    @property
    def ok(self) -> bool:
        """Every task ran, and its call was served exactly once."""
        return self.completed == self.tasks and self.lost == 0 and self.duplicates == 0


class Recorder:
    """What the demo watches: limiter and task signals, and the rates sampled over time."""

    def __init__(
        self, limiter: Limiter, gate: TaskGate, task_names: set[str], *, celery: bool = True
    ) -> None:
        self.celery = celery  # task ends come from Celery's signals, else from task_done()
        self.limiter = limiter
        self.gate = gate
        self.task_names = task_names
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self.rates: dict[str, list[tuple[float, float]]] = {n: [] for n in INTEGRATIONS}
        self.backoffs: list[tuple[float, str, bool]] = []  # (t, integration, decreased)
        self.requeues: collections.Counter[str] = collections.Counter()
        self.succeeded: set[str] = set()
        self.failed: set[str] = set()
        self.last_done: dict[str, float] = {}

    def now(self) -> float:
        return time.monotonic() - self.start

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """Connect the receivers for the duration of the run (strongly: no weak refs)."""
        signals.backoff.connect(self._on_backoff, sender=self.limiter, weak=False)
        signals.task_requeued.connect(self._on_requeue, sender=self.gate, weak=False)
        if self.celery:
            from celery import signals as celery_signals

            celery_signals.task_success.connect(self._on_success, weak=False)
            celery_signals.task_failure.connect(self._on_failure, weak=False)
        try:
            yield
        finally:
            if self.celery:
                celery_signals.task_failure.disconnect(self._on_failure)
                celery_signals.task_success.disconnect(self._on_success)
            signals.task_requeued.disconnect(self._on_requeue, sender=self.gate)
            signals.backoff.disconnect(self._on_backoff, sender=self.limiter)

    def _on_backoff(self, sender: object, **fields: Any) -> None:
        self.record_backoff(fields["integration"], bool(fields["decreased"]))

    def _on_requeue(self, sender: object, **fields: Any) -> None:
        self.record_requeue(fields["integration"])

    def record_backoff(self, integration: str, decreased: bool, at: float | None = None) -> None:
        """A backoff at monotonic time ``at`` (default: now), decreasing the rate or not."""
        t = self.now() if at is None else at - self.start
        with self._lock:
            self.backoffs.append((t, integration, decreased))

    def record_requeue(self, integration: str) -> None:
        """A task went back to the broker."""
        with self._lock:
            self.requeues[integration] += 1

    def _on_success(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "name", None) in self.task_names:
            self.task_done(sender.integration, sender.request.id, ok=True)

    def _on_failure(self, sender: Any = None, task_id: str = "", **_: Any) -> None:
        if getattr(sender, "name", None) in self.task_names:
            self.task_done(sender.integration, task_id, ok=False)

    def task_done(
        self, integration: str, task_id: str, *, ok: bool, at: float | None = None
    ) -> None:
        """A task ended for good at monotonic time ``at`` (default: now): succeeded
        (``ok``) or failed."""
        t = self.now() if at is None else at - self.start
        with self._lock:
            (self.succeeded if ok else self.failed).add(task_id)
            self.last_done[integration] = max(t, self.last_done.get(integration, 0.0))

    def sample(self) -> None:
        """Record each integration's current rate."""
        t = self.now()
        for name in INTEGRATIONS:
            rate = self.limiter.snapshot(name).limit().rate
            self.rates[name].append((t, rate))

    def done(self) -> int:
        with self._lock:
            return len(self.succeeded | self.failed)

    def status(self, upstream: HiddenLimitUpstream) -> str:
        rates = " ".join(f"{n} {s[-1][1]:4.1f}/s" for n, s in self.rates.items() if s)
        with self._lock:
            requeues = sum(self.requeues.values())
        return f"{rates} · 429s {upstream.count(429)} · requeues {requeues}"


def summarize(
    recorder: Recorder,
    upstream: HiddenLimitUpstream,
    ids: dict[str, list[str]],
    hidden_limit: float,
) -> DemoSummary:
    served = collections.Counter(upstream.served)
    achieved = {
        name: sum(served[i] for i in ids[name]) / max(recorder.last_done.get(name, 0.0), 1e-9)
        for name in INTEGRATIONS
    }
    enqueued = [i for name in INTEGRATIONS for i in ids[name]]
    return DemoSummary(
        tasks=len(enqueued),
        completed=len(recorder.succeeded),
        failed=len(recorder.failed),
        seconds=max(recorder.last_done.values(), default=0.0),
        hidden_limit=hidden_limit,
        achieved_rate=achieved,
        ratio={name: rate / hidden_limit for name, rate in achieved.items()},
        rejected_429=upstream.count(429),
        requeues=sum(recorder.requeues.values()),
        backoffs=sum(1 for _, _, decreased in recorder.backoffs if decreased),
        lost=sum(1 for i in enqueued if served[i] == 0),
        duplicates=sum(served[i] - 1 for i in enqueued if served[i] > 1),
    )


def summary_table(summary: DemoSummary, recorder: Recorder) -> Table:
    table = Table(
        title=f"queue_ratelimit demo: {summary.tasks} tasks in {summary.seconds:.1f} s",
        caption=(
            f"lost {summary.lost} · duplicates {summary.duplicates} · failed {summary.failed}"
            f" · requeues per task {summary.requeues_per_task:.2f}"
        ),
    )
    for header in ("integration", "achieved/s", "hidden limit/s", "ratio", "429s", "requeues"):
        table.add_column(header, justify="left" if header == "integration" else "right")
    for name in INTEGRATIONS:
        rejected = sum(1 for _, which, _ in recorder.backoffs if which == name)
        table.add_row(
            name,
            f"{summary.achieved_rate[name]:.1f}",
            f"{summary.hidden_limit:g}",
            f"{summary.ratio[name]:.0%}",
            str(rejected),
            str(recorder.requeues[name]),
        )
    return table


def plot_rates(path: Path, recorder: Recorder, hidden_limit: float) -> None:
    """Write the AIMD rate per integration over time, the hidden limit and the backoffs."""
    try:
        from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise ImportError(PLOT_HINT) from exc
    figure = Figure(figsize=(9, 4.5), layout="constrained")
    axes = figure.subplots()
    for name, series in recorder.rates.items():
        times = [t for t, _ in series]
        line = axes.plot(times, [rate for _, rate in series], label=f"{name} rate")[0]
        hits = [t for t, which, decreased in recorder.backoffs if which == name and decreased]
        peaks = [_rate_at(series, t) for t in hits]
        axes.plot(hits, peaks, "v", color=line.get_color(), label=f"{name} backoff (429)")
    axes.axhline(
        hidden_limit, color="black", linestyle="--", label=f"hidden limit {hidden_limit:g}/s"
    )
    axes.set_title("AIMD rate per integration finding the upstream's hidden limit")
    axes.set_xlabel("seconds since the first task was enqueued")
    axes.set_ylabel("limiter rate (calls/s)")
    axes.set_ylim(bottom=0)
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.savefig(path, format="png", dpi=110)


def _rate_at(series: list[tuple[float, float]], t: float) -> float:
    """The last sampled rate at or before ``t`` (the rate the backoff cut)."""
    before = [rate for when, rate in series if when <= t]
    return before[-1] if before else (series[0][1] if series else 0.0)
