"""The goodput benchmark's fairness scenario: tenants under one app-wide limit.

* **fairness**: the upstream limits the whole application to L, every tenant together. K
  quiet tenants with Q tasks each run alone first. Then a noisy tenant's backlog of B tasks
  is enqueued first, with the same quiet tenants behind it. Measured: the quiet tenants'
  times (a tenant's first enqueue to its last completion) beside the backlog, the worst of
  them over the K's time alone (the last of them to finish alone: the fleet test's measure,
  ``tests/integration/test_fair_share_fleet.py``; each tenant against its own time alone is
  printed too), and the 429 share (calls past the app-wide limit). Q is large enough that
  the quiet tenants' time alone (about K x Q / L) is several passes of the backlog through
  the workers: before the quiet tenants' first tasks are reached, every task of the backlog
  ahead of them in the queue is taken once (and requeued), which no limiter can avoid in one
  FIFO queue, and which with Q = 10 was half of their time alone.

This project states the app-wide limit as an ``app_limit`` of L, shared fairly among the
tenants (``ours_config`` with ``fair``; ``docs/limits.md``); each tenant's own level is as
in every other scenario. The peers have no per-tenant fairness: they run with the app-wide
limit only, as their per-queue limit (``Fleet.set_limits``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from goodput_fleet import Fleet
from goodput_phase import Send, constant, deadline, run_phase
from goodput_report import Row, base_row, both_checks, fmt, span, steady_rate

if TYPE_CHECKING:
    from goodput_scenarios import Scale

RETRY_AFTER = "retry-after"


def fairness(fleet: Fleet, sc: Scale) -> Row:
    ours = fleet.system.ours
    if ours:  # the app-wide limit stated, shared fairly: the workers' config changes
        fleet.fair = True
        fleet.restart()
    try:
        upstream = {"main": (sc.rate, RETRY_AFTER)}
        quiet = [
            Send(f"quiet{k}", sc.fair_quiet, tenant=f"quiet{k}") for k in range(sc.fair_tenants)
        ]
        total = sc.fair_tenants * sc.fair_quiet
        alone = run_phase(fleet, upstream, quiet, deadline(total / sc.rate))
        fleet.reset_limiter()
        noisy = Send("noisy", sc.fair_backlog, tenant="noisy")
        # (each tenant's own level starts at L/5 and climbs, as in every scenario: a
        # tenant alone, the backlog's at the end, is slower than the app-wide L at first)
        ideal = (total + sc.fair_backlog) / sc.rate
        both = run_phase(fleet, upstream, [noisy, *quiet], deadline(2 * ideal))
    finally:
        if ours:  # as the other scenarios expect it
            fleet.fair = False
            fleet.restart()
    solo = [span(alone, send.group) for send in quiet]
    shared = [span(both, send.group) for send in quiet]
    alone_s = [s for s in solo if s is not None]
    beside_s = [s for s in shared if s is not None]
    measured = len(alone_s) == len(beside_s) == len(quiet)  # (None: a tenant unfinished)
    # the quiet tenants arrive together, so which of them the workers reach first is their
    # queue's order, alone as beside: each is held to the time the K take alone, the last of
    # them to finish (as tests/integration/test_fair_share_fleet.py holds them); the worst
    # tenant against its own time alone is shown beside it
    worst = max(beside_s) / max(alone_s) if measured else None
    own = max(b / a for a, b in zip(alone_s, beside_s, strict=True)) if measured else None
    row = base_row(fleet.system, both, steady_rate(both.calls["main"], constant(sc.rate)))
    row.extra = {
        "quiet alone s": fmt(max(alone_s) if measured else None, ".1f"),
        "quiet beside s": fmt(max(beside_s) if measured else None, ".1f"),
        "worst ratio": fmt(worst),
        "worst own ratio": fmt(own),
    }
    row.checks = {
        **both_checks(row, base_row(fleet.system, alone, None)),
        "fair": worst,
        "429": row.share_429 * 100,
    }
    return row
