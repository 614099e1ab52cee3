"""The fair-share fleet test's shape, replayed on the memory backend with a fake clock.

``tests/integration/test_fair_share_fleet.py`` runs four RQ workers through a backlog of
1,000 tasks of one tenant (5/s of its own, 20/s for the whole integration, fair share), then
19 quiet tenants with 20 tasks each arrive; the quiet tenants must keep their pace beside
the backlog. That test takes minutes on real workers and a policy change can fail it one
run in three; this replay runs the same shape in seconds, deterministically per seed, with
the real ``TaskGate.before`` per delivery and ``Limiter.on_success`` per call:

* 4 workers take tasks from one queue; each delivery costs a worker ``--hop`` seconds
  (spread 0.3-3x), a granted task sleeps its wait and calls (5-20 ms), then reports;
* a requeued task comes back at its countdown (plus up to 20 ms) at the queue's front, as
  ``RateLimitedWorker`` promotes due jobs;
* the quiet tenants are appended once fewer than 10 tasks are queued (as the test does),
  and measured against the same 19 x 20 tasks alone on a limiter of their own.

Prints per seed the quiet tenants' worst finish beside the backlog and alone, how much of
the backlog was still waiting then, requeues per task (and with ``--to-the-end``, in the
backlog's tail once the quiet are done), and the most grants in one second (20 and a burst
of 1 allowed).

    python benchmarks/fair_replay.py [--seeds 6] [--hop 0.01] [--to-the-end]
"""

from __future__ import annotations

import argparse
import collections
import heapq
import itertools
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from acquire import max_window

from queue_ratelimit import IntegrationConfig, Limiter
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.tasks import Run, TaskCall, TaskGate, Ticket

FAIR = {  # tests/integration/rq_jobs.py's FAIR
    "rate_limit_per_sec": 5.0,
    "burst_size": 1.0,
    "increase_factor": 0.0,
    "min_rate": 5.0,
    "max_rate": 5.0,
    "slow_start": False,
    "max_wait": 1.0,
    "requeue_budget": 1000,
    "app_limit": {
        "rate_limit_per_sec": 20.0,
        "burst_size": 1.0,
        "min_rate": 20.0,
        "max_rate": 20.0,
    },
}
WORKERS, BACKLOG, QUIET, EACH = 4, 1000, 19, 20
START = 1_800_000_000.0

Task = tuple[str, str, Ticket]  # id, tenant, ticket


@dataclass
class Outcome:
    """What one replay measured."""

    quiet_worst: float = 0.0  # seconds from the quiet tenants' arrival to their last call
    backlog_left: int = 0  # backlog tasks not yet served then
    requeues: int = 0
    served: int = 0
    tail_requeues: int = 0  # after the quiet were done, to the backlog's end
    tail_seconds: float = 0.0
    most_in_a_second: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)


def replay(seed: int, hop: float, backlog: int, to_the_end: bool) -> Outcome:
    """One run: ``backlog`` tasks of ``noisy`` first (0: the quiet tenants alone)."""
    now = [START]
    rng = random.Random(seed)
    config = IntegrationConfig.from_mapping("shared", FAIR)
    limiter = Limiter(MemoryBackend(clock=lambda: now[0]), {"shared": config})
    gate = TaskGate(limiter, clock=lambda: now[0], rng=rng.random)
    queue: collections.deque[Task] = collections.deque(
        (f"noisy-{n}", "noisy", Ticket()) for n in range(backlog)
    )
    due: list[tuple[float, int, Task]] = []
    events: list[tuple[float, int, int]] = []  # (time, order, worker: -1 a task falls due)
    order = itertools.count()
    for worker in range(WORKERS):
        heapq.heappush(events, (START, next(order), worker))
    idle: set[int] = set()
    served: dict[str, float] = {}
    quiet: set[str] = set()
    arrived = done = None
    out, grants, at_done = Outcome(), [], 0
    while events:
        t, _, worker = heapq.heappop(events)
        now[0] = t
        while due and due[0][0] <= t:  # promoted to the queue's front
            queue.appendleft(heapq.heappop(due)[2])
        if worker < 0:
            for waiting in idle:
                heapq.heappush(events, (t, next(order), waiting))
            idle.clear()
            continue
        if arrived is None and len(queue) < 10:
            arrived = t
            for i, n in itertools.product(range(QUIET), range(EACH)):
                quiet.add(f"q{i}-{n}")
                queue.append((f"q{i}-{n}", f"q{i}", Ticket()))
        if arrived is not None and done is None and quiet <= served.keys():
            done, at_done = t, out.requeues
            if not to_the_end:
                break
        if not queue:
            idle.add(worker)
            continue
        task, tenant, ticket = queue.popleft()
        now[0] = t + hop * rng.uniform(0.3, 3.0)
        verdict = gate.before(TaskCall("shared", tenant), ticket)
        if isinstance(verdict, Run):
            grants.append(now[0] + verdict.decision.wait)
            finished = now[0] + verdict.decision.wait + rng.uniform(0.005, 0.02)
            served[task] = finished
            limiter.on_success("shared", tenant)
            heapq.heappush(events, (finished, next(order), worker))
            continue
        out.requeues += 1
        out.reasons[f"{verdict.reason} ({'backlog' if tenant == 'noisy' else 'quiet'})"] += 1
        back = now[0] + verdict.countdown + rng.uniform(0.0, 0.02)
        heapq.heappush(due, (back, next(order), (task, tenant, verdict.ticket)))
        heapq.heappush(events, (back, next(order), -1))
        heapq.heappush(events, (now[0], next(order), worker))
    assert arrived is not None and done is not None
    out.quiet_worst = max(served[i] for i in quiet) - arrived
    out.backlog_left = sum(
        1 for n in range(backlog) if served.get(f"noisy-{n}", float("inf")) > done
    )
    out.served = len(served)
    if to_the_end:
        out.tail_requeues, out.tail_seconds = out.requeues - at_done, now[0] - done
    out.most_in_a_second = max_window(sorted(grants))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="runs, seeds 1..N")
    parser.add_argument("--hop", type=float, default=0.01, help="a delivery's cost, seconds")
    parser.add_argument("--to-the-end", action="store_true", help="on to the backlog's end")
    args = parser.parse_args(argv)
    for seed in range(1, args.seeds + 1):
        alone = replay(seed, args.hop, 0, False)
        beside = replay(seed, args.hop, BACKLOG, args.to_the_end)
        tail = ""
        if args.to_the_end:
            per_second = beside.tail_requeues / max(beside.tail_seconds, 1e-9)
            tail = f"; tail {beside.tail_requeues} requeues in {beside.tail_seconds:.0f} s"
            tail += f" ({per_second:.0f}/s)"
        print(
            f"seed {seed}: quiet {beside.quiet_worst:.1f} s beside, {alone.quiet_worst:.1f} s"
            f" alone ({beside.quiet_worst / alone.quiet_worst:.2f}x); backlog left"
            f" {beside.backlog_left}; {beside.requeues / beside.served:.2f} requeues/task"
            f"{tail}; most grants in 1 s {beside.most_in_a_second}"
        )
        print(f"         {dict(sorted(beside.reasons.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
