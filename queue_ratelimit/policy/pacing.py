"""Arrival pacing: holders that come back late are spread at the rate, not sent at once.

The token bucket of ``aimd`` keeps a ledger: a reservation pays when it is made, and its
holder may go once the bucket has refilled past its due mark. A holder that comes back late
(its requeued task waited for a busy worker) finds its slot passed and goes at once, while
the holders after it go at their own slots. Late holders then call within milliseconds of
each other and of the on-time ones: above the rate, and the upstream answers 429. (With the
goodput benchmark's shared workers on RQ, whose workers promote due jobs only when they
come to dequeue, late holders went in bursts of 2-5 within 20 ms, and a second congestion
event came a second after the first cooldown in 6 of 16 diagnostic phases; with pacing, in
none of 6.)

So every granted call of the requests limit is recorded in a virtual schedule (GCRA):
``paced_until`` is when the next call is due if calls go at the rate, and a grant at
``slot`` moves it to ``max(paced_until, slot) + cost / pace``. A holder more than
``TOLERANCE`` late goes no sooner than ``paced_until - (burst - cost) / pace - TOLERANCE``,
as a sleep within ``max_wait`` (a longer delay sends it back, holding its reservation).
Fresh calls and holders on time keep the ledger's slots: the ledger re-prices its debt when
the rate rises, and holding them to the schedule would slow the climb. A new congestion
event forgives the schedule as it forgives the debt.
"""

from __future__ import annotations

from queue_ratelimit.policy.state import KeyState

TOLERANCE = 0.05
"""Seconds: a holder this little late (the usual jitter of a broker's delayed delivery)
goes at once, and a later one may run this far ahead of the schedule beyond its burst."""


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
