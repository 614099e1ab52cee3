"""When a reservation's holder is served: its slot at the current rates, when it comes back,
and its tenant's booked share; free of I/O and clocks (``admission.py`` decides the call,
``limiter.lua`` implements the same)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from queue_ratelimit.policy import fair
from queue_ratelimit.policy.climb import climb_time
from queue_ratelimit.policy.state import KeyState, LimitParams, Reservation

if TYPE_CHECKING:
    from queue_ratelimit.policy.chain import Level


def share_slot(chain: Level, kept: Reservation | None, limits: int, now: float) -> float:
    """When the tenant's share (fair share) lets the call through: a fresh call when its
    share holds its cost, a redeemed one when its booked share comes."""
    if chain.share is None:
        return now
    if kept is not None:
        return fair.booked_slot(chain.share, kept.due, limits, now)
    return fair.slot(chain.share, now)


def pulled(state: KeyState, now: float, limits: Sequence[LimitParams], kept: Reservation) -> float:
    """A reservation's slot at the current rates (never later than it was promised)."""
    if len(kept.due) < len(limits):
        return kept.slot
    slot = now
    for lim, due in zip(limits, kept.due, strict=False):
        bucket = state.buckets[lim.name]
        left = due - bucket.credit
        if left <= 0:
            continue
        if bucket.quota_left is not None:  # a published quota paces it: keep the promise
            return kept.slot
        slot = max(slot, max(bucket.ts, now) + left / bucket.rate)
    return min(kept.slot, slot)


def recheck(
    state: KeyState,
    now: float,
    limits: Sequence[LimitParams],
    due: tuple[float, ...],
    wait: float,
    growth: float,
    cooldown_until: float,
) -> float:
    """When a reservation's holder should come back: its slot, or sooner if the requests
    rate goes on climbing by ``growth`` per success, as AIMD climbs it until a backoff
    (not before ``cooldown_until``)."""
    if len(due) < len(limits):
        return wait
    start = max(now, cooldown_until)
    back = start - now
    for index, (lim, mark) in enumerate(zip(limits, due, strict=False)):
        bucket = state.buckets[lim.name]
        left = mark - bucket.credit
        if left <= 0:
            continue
        if bucket.quota_left is not None:
            return wait
        begin = max(bucket.ts, start) - now
        increase = growth if index == 0 else 0.0  # other limits grow with requests
        back = max(back, begin + climb_time(left, bucket.rate, increase, lim.max_rate))
    return min(wait, back)
