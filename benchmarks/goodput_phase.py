"""One phase of a goodput scenario: upstreams that record every answer, a backlog, a wait.

A phase starts its upstreams (``RecordingUpstream``: ``HiddenLimitUpstream`` that also keeps
``(time, bucket, status)`` of every answer), enqueues its whole backlog at once, runs its
timed events (``set_limit``), and waits until every task completed or failed visibly, or
until its deadline. It then reads the tasks' records (see ``goodput_common``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from goodput_fleet import Fleet

from queue_ratelimit.testing import HiddenLimitUpstream

POLL = 0.2
SETTLE = 0.2  # seconds to wait after the last task, so a late duplicate is still seen


class RecordingUpstream(HiddenLimitUpstream):
    """``HiddenLimitUpstream`` that also records when it answered what, per bucket."""

    def __init__(self, limit: float, *, headers: str = "retry-after") -> None:
        super().__init__(limit, 1.0, headers=headers)
        self.log: list[tuple[float, str, int]] = []

    def _decide(self, bucket: str, now: float) -> tuple[int, dict[str, str]]:
        status, headers = super()._decide(bucket, now)
        self.log.append((now, bucket, status))  # under the server's lock
        return status, headers


@dataclass(frozen=True)
class Send:
    """``count`` tasks of ``group`` for ``queue`` (0: api, 1: other), calling ``upstream``."""

    group: str
    count: int
    queue: int = 0
    upstream: str = "main"
    tenant: str = ""


@dataclass(frozen=True)
class Event:
    """At ``at`` seconds into the phase, set the hidden limit of ``upstream`` to ``limit``."""

    at: float
    limit: float
    upstream: str = "main"


@dataclass
class Phase:
    """What one phase recorded (times in epoch seconds)."""

    start: float
    end: float = 0.0
    groups: dict[str, list[str]] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)
    t_done: dict[str, float] = field(default_factory=dict)
    sleep: float = 0.0
    requeues: int = 0
    deliveries: int = 0
    failed: set[str] = field(default_factory=set)
    calls: dict[str, list[tuple[float, str, int]]] = field(default_factory=dict)
    served_twice: int = 0
    timed_out: bool = False

    @property
    def ids(self) -> list[str]:
        return [i for ids in self.groups.values() for i in ids]


def deadline(ideal: float) -> float:
    """How long a phase may take: 1.5 times the time at exactly L, plus 5 s."""
    return 1.5 * ideal + 5.0


def constant(limit: float) -> Callable[[float], float]:
    return lambda t: limit


def run_phase(
    fleet: Fleet,
    upstreams: dict[str, tuple[float, str]],
    sends: Sequence[Send],
    deadline: float,
    events: Sequence[Event] = (),
) -> Phase:
    """Run one phase; ``upstreams`` maps a name to ``(hidden limit, dialect)``."""
    with ExitStack() as stack:
        servers = {
            name: RecordingUpstream(limit, headers=dialect)
            for name, (limit, dialect) in upstreams.items()
        }
        for server in servers.values():
            stack.enter_context(server)
        fleet.set_limits({fleet.queues[s.queue]: servers[s.upstream].limit for s in sends})
        phase = Phase(start=time.time())
        for send in sends:
            _enqueue(fleet, servers[send.upstream], send, phase)
        _wait(fleet, phase, deadline, _timeline(servers, events))
        time.sleep(SETTLE)
        _collect(fleet, phase)
        phase.calls = {name: list(server.log) for name, server in servers.items()}
        phase.served_twice = sum(
            sum(1 for n in server.served.values() if n > 1) for server in servers.values()
        )
    if phase.timed_out:  # tasks still pending must not run into the next phase
        fleet.restart()
    return phase


def _enqueue(fleet: Fleet, server: RecordingUpstream, send: Send, phase: Phase) -> None:
    queue = fleet.queues[send.queue]
    ids = phase.groups.setdefault(send.group, [])
    for _ in range(send.count):
        task_id = fleet.send(queue, server.url, send.tenant, server.limit)
        phase.sent_at[task_id] = time.time()
        ids.append(task_id)


def _timeline(
    servers: dict[str, RecordingUpstream], events: Sequence[Event]
) -> list[tuple[float, Callable[[], None]]]:
    return [
        (event.at, lambda e=event: servers[e.upstream].set_limit(e.limit))  # type: ignore[misc]
        for event in sorted(events, key=lambda e: e.at)
    ]


def _wait(
    fleet: Fleet, phase: Phase, deadline: float, timeline: list[tuple[float, Callable[[], None]]]
) -> None:
    """Until every task completed or failed, running timed events; or until ``deadline``."""
    pending = phase.ids
    while pending:
        now = time.time()
        while timeline and now - phase.start >= timeline[0][0]:
            timeline.pop(0)[1]()
        if now - phase.start > deadline or not fleet.alive():
            phase.timed_out = True
            break
        time.sleep(POLL)
        done = fleet.records.fetch("done", pending)
        failed = fleet.records.fetch("failed", pending)
        pending = [i for i, d, f in zip(pending, done, failed, strict=True) if not (d or f)]
    for _, action in timeline:  # a phase that ends early still leaves the upstream as planned
        action()


def _collect(fleet: Fleet, phase: Phase) -> None:
    ids = phase.ids
    records = fleet.records
    for task_id, count, when, slept, requeues, deliveries in zip(
        ids,
        records.fetch("done", ids),
        records.fetch("t", ids),
        records.fetch("sleep", ids),
        records.fetch("requeues", ids),
        records.fetch("deliveries", ids),
        strict=True,
    ):
        phase.deliveries += int(deliveries or 0)
        if count:
            phase.done[task_id] = int(count)
            phase.t_done[task_id] = float(when)
        phase.sleep += float(slept or 0)
        phase.requeues += int(requeues or 0)
    phase.failed = fleet.failed_ids(ids)
    phase.end = max(phase.t_done.values(), default=time.time())
