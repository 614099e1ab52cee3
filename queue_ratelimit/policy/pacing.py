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
``paced_until - (burst - cost) / pace - TOLERANCE``:

* a holder more than ``TOLERANCE`` late goes no sooner than ``earliest``, as a sleep within
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
(``max_sleepers`` 1: one place, 25 ms at 40/s) lost most of that (0.57-0.91).
"""

from __future__ import annotations

from queue_ratelimit.policy.state import KeyState

TOLERANCE = 0.002
"""Seconds a call may run ahead of the schedule beyond its burst (a sleep shorter than this
is not worth a timer); in the start phase, a holder this little late goes at once."""


def earliest(state: KeyState, burst: float, cost: float, pace: float) -> float:
    """The earliest slot the schedule allows a call of ``cost`` (0: no bound)."""
    if cost <= 0 or pace <= 0:
        return 0.0
    return state.paced_until - max(0.0, burst - cost) / pace - TOLERANCE


def advance(state: KeyState, slot: float, cost: float, pace: float) -> None:
    """Record a call granted at ``slot``."""
    if cost > 0 and pace > 0:
        state.paced_until = max(state.paced_until, slot) + cost / pace


def forgive(state: KeyState) -> None:
    """Start the schedule afresh (a new congestion event)."""
    state.paced_until = 0.0
