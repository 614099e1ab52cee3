"""Arrival pacing: calls reach the upstream at the rate, whenever their holders come back.

The token bucket of ``aimd`` keeps a ledger: a reservation pays when it is made, and its
holder may go once the bucket has refilled past its due mark. A holder that comes back late
(its requeued task waited for a busy worker, or a broker's delayed delivery ran late) finds
its slot passed and goes at once, while the holders after it go at their own slots. The
ledger's slots are at the rate, but the calls are not: a slot left unused is followed by
two calls within milliseconds, and a second of calls holds one or two more than the rate.

So every granted call of the requests limit is recorded in a virtual schedule (GCRA):
``paced_until`` is when the next call is due if calls go at the rate, and a grant at
``slot`` moves it to ``max(paced_until, slot) + cost / pace``. Once the key is past its
start phase, no call goes sooner than ``paced_until - (burst - cost) / pace - TOLERANCE``:
that is a sleep within ``max_wait``, and a longer delay sends the call back (holding its
reservation). In the start phase only a holder more than ``TOLERANCE`` late is held to the
schedule: the ledger re-prices its debt as the rate climbs, and a schedule laid at the rates
passed would slow the climb. A new congestion event forgives the schedule as it forgives the
debt.

Measured (``benchmarks/goodput.py``, shared workers: ``max_sleepers`` 1, so most tasks are
requeued and come back through the broker): with only late holders held to the schedule
and a tolerance of 50 ms, a fleet landed at 0.97 of the upstream's limit met a second and a
third congestion event within seconds (40 calls in 965 ms at 38.4/s: three within 8 ms at
the head of the second), each a whole ``Retry-After`` lost, and served 0.55-0.72 of the
limit on Dramatiq and RQ; with every grant held to it and 2 ms, one event (the start
phase's) and 0.91-0.94.
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
