"""How a key's rate grows: the start phase, the band below the last ceiling, and what an idle
key keeps of what it learned (see ``aimd``'s module docstring for the whole of the rules).

Free of I/O and clocks; ``backends/lua/limiter.lua`` implements the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from queue_ratelimit.config import PRIMARY_LIMIT
from queue_ratelimit.policy.state import BucketState, KeyState, LimitParams, Plan, new_state

PROBE_FLOOR = 0.97
"""A decrease lands no lower than this fraction of the rate served; from it up to ``peak``
the climb follows the time since the decrease (``BAND``) instead of ``increase``."""

BAND = 20.0
"""Seconds the rate takes to cross from ``PROBE_FLOOR`` of ``peak`` to ``peak``."""

START_GROWTH = 1.0
"""In the start phase, requests/s added per success: at least this (or ``increase``)."""

START_HEADROOM = 2.0
"""In the start phase, the rate climbs to at most this many times the delivered rate."""

NOISE = 0.8
"""At a congestion event, a delivered rate this close below the ``ceiling`` (the most served
over a whole window since the last event) is that ceiling counted short: a second holds only
a few calls at a low rate, and where in it a slice ends moves the count by one or two."""


def revive(old: KeyState, now: float, limits: Sequence[LimitParams]) -> KeyState:
    """A key that idled past its expiry, used again: fresh, but for the rates it learned.

    Each limit that met a backoff starts at ``PROBE_FLOOR`` of its ``peak`` (the rate
    served at its last decrease), which stays its peak; a requests limit that never met one
    starts at its ``ceiling`` when that is above the configured start (in the start phase
    still).
    """
    state = new_state(now)
    state.ceiling = old.ceiling
    for lim in limits:
        learned = old.buckets.get(lim.name)
        peak = learned.peak if learned is not None else 0.0
        if peak > 0:
            rate = PROBE_FLOOR * peak
        elif lim.name == PRIMARY_LIMIT and old.ceiling > lim.rate:
            rate = old.ceiling
        else:
            continue
        state.buckets[lim.name] = BucketState(rate=rate, tokens=lim.burst, ts=now, peak=peak)
    return state


def starting(state: KeyState, plan: Plan) -> bool:
    """The key is in its start phase (see the module docstring)."""
    return (
        plan.slow_start and plan.limits[0].increase > 0 and state.buckets[PRIMARY_LIMIT].peak == 0
    )


def growth(state: KeyState, plan: Plan) -> float:
    """Requests/s the rate gains per success now: ``increase``, more in the start phase."""
    increase = plan.limits[0].increase
    return max(increase, START_GROWTH) if starting(state, plan) else increase


def probe_step(rate: float, peak: float, increase: float, since: float) -> float:
    """What a success adds to a rate with its ``peak``, ``since`` seconds after the decrease
    that set it: ``increase``, or in the band below the peak what the time allows."""
    if peak <= 0 or not PROBE_FLOOR * peak <= rate < peak:
        return increase
    target = peak * (PROBE_FLOOR + (1.0 - PROBE_FLOOR) * min(1.0, since / BAND))
    return min(increase, max(0.0, target - rate))


def climb_time(units: float, rate: float, increase: float, max_rate: float) -> float:
    """Seconds to refill ``units`` starting at ``rate`` if each unit granted raises the rate
    by ``increase`` (so ``rate' = increase * rate``), up to ``max_rate``."""
    if increase <= 0 or rate >= max_rate:
        return units / rate
    cap_units = (max_rate - rate) / increase
    if units <= cap_units:
        return math.log(1 + units * increase / rate) / increase
    return math.log(max_rate / rate) / increase + (units - cap_units) / max_rate
