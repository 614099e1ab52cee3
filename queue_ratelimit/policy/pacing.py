"""Arrival pacing: calls reach the upstream at the rate, whenever their holders come back.

The token bucket of ``aimd`` keeps a ledger: a reservation pays when it is made, and its
holder may go once the bucket has refilled past its due mark. A holder that comes back late
(its requeued task waited for a busy worker, or a broker's delayed delivery ran late) finds
its slot passed and goes at once, while the holders after it go at their own slots. The
ledger's slots are at the rate, but the calls are not: a slot left unused is followed by
two calls within milliseconds, and a second of calls holds one or two more than the rate.

So every granted call of the requests limit is recorded in a virtual schedule (GCRA):
``paced_until`` is when the next call is due if calls go at the rate, and a grant at
``slot`` moves it to ``max(paced_until, slot) + cost / pace``. ``earliest`` is then
``paced_until - (burst - cost) / pace - tolerance(pace)``:

* a holder more than ``tolerance(pace)`` late goes no sooner than ``earliest``, as a sleep within
  ``max_wait``; a longer delay sends it back, holding its reservation, told to come back at
  ``earliest``;
* once the key is past its start phase, every other call (new, or a holder on time) goes no
  sooner than ``earliest`` either, but at most ``max_wait`` after its slot and never sent
  back for it: with ``max_wait`` 0 it goes at its slot. (Refused, a holder on time could be
  passed again and again by callers who may sleep, each moving the schedule on.) In the
  start phase they keep the ledger's slots: the ledger re-prices its debt as the rate
  climbs, and a schedule laid at the rates passed would slow the climb.

The schedule is a single time, not a list of the slots granted: a call granted ahead of
its turn in the ledger (a sleeper whose slot lies behind reservations) holds back a holder
whose slot comes before it, within that holder's ``max_wait``. A new congestion event
forgives the schedule as it forgives the debt, and a published quota's reset ends a
schedule laid at the quota's slower pace.

Measured (``benchmarks/goodput.py``, shared workers: ``max_sleepers`` 1, so most tasks are
requeued and come back through the broker): with only late holders held to the schedule
and a tolerance of 50 ms, a fleet landed at 0.97 of the upstream's limit met a second and a
third congestion event within seconds (40 calls in 965 ms at 38.4/s: three within 8 ms at
the head of the second), each a whole ``Retry-After`` lost, and served 0.55-0.72 of the
limit on Dramatiq and RQ; with every call held to it and 2 ms, one event (the start
phase's) and 0.88-0.94. Holding calls on time only within their places in line
(``max_sleepers`` 1: one place, 25 ms at 40/s) lost most of that (0.57-0.91). Every call
held with 50 ms gained nothing (two intervals at 40/s: calls still went in pairs).

The tolerance is a share of one interval (``SHARE``), capped at ``TOLERANCE``: what counts
against a 40/s limit is a few milliseconds, against 5/s tens of them. A fixed 2 ms made
nearly every holder "late" on a loaded host at any rate: at 5/s, with 20 tenants sharing an
integration-wide limit, the backlog's tenant had its workers asleep up to ``max_wait`` for
its schedule (beyond ``tenant_sleepers``) while the quiet tenants' tasks waited
(``tests/integration/test_fair_share_fleet.py`` beside three CPU-bound processes: a quiet
tenant at 1.8-4.9x its time alone in 4 runs of 9; with the share, 1.06-1.11 in 3 of 3).
"""

from __future__ import annotations

from queue_ratelimit.policy.state import KeyState

TOLERANCE = 0.05
"""Seconds: the most a call may run ahead of the schedule beyond its burst, and the most a
holder may be late and still count as on time (the usual jitter of a broker's delivery)."""

SHARE = 0.25
"""...and no more than this share of one interval at the pace: at 40/s 6.25 ms, at 4/s and
below ``TOLERANCE``."""


def tolerance(pace: float) -> float:
    """How far a call may run ahead of the schedule at ``pace`` (see ``SHARE``)."""
    return min(TOLERANCE, SHARE / pace) if pace > 0 else TOLERANCE


def earliest(state: KeyState, burst: float, cost: float, pace: float) -> float:
    """The earliest slot the schedule allows a call of ``cost`` (0: no bound)."""
    if cost <= 0 or pace <= 0:
        return 0.0
    return state.paced_until - max(0.0, burst - cost) / pace - tolerance(pace)


def advance(state: KeyState, slot: float, cost: float, pace: float) -> None:
    """Record a call granted at ``slot``."""
    if cost > 0 and pace > 0:
        state.paced_until = max(state.paced_until, slot) + cost / pace


def forgive(state: KeyState) -> None:
    """Start the schedule afresh (a new congestion event)."""
    state.paced_until = 0.0
