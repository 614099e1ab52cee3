"""Feed-forward: the upstream's published quota and the call's actual cost, applied to buckets.

When a response says ``remaining=R, reset in T``, the limit is held to that window:

* calls paid since the answered call was granted may not have been counted by the upstream
  yet, so ``R`` is lowered by them, and by one more for a call granted earlier that may
  arrive later (for the ``requests`` limit, using ``Decision.seq``);
* the bucket's tokens are capped at ``R``, and until the reset it refills no faster than
  ``R / T``, so the rest of the window is spread evenly instead of spent at once;
* each call paid before the reset spends from ``R``; at ``R = 0`` nothing is granted until
  the reset (a 200 with ``remaining: 0`` holds the fleet back without any 429).

A cost estimated at acquire (OpenAI tokens) is corrected by ``adjust``: the difference is
charged to the bucket (or refunded to it, up to its burst) and to the quota.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from queue_ratelimit.config import PRIMARY_LIMIT
from queue_ratelimit.policy.state import BucketState, Feedback, KeyState, LimitParams

IN_FLIGHT_MARGIN = 1.0
"""Requests kept back from a published ``remaining``: a call granted *before* the answered
one may reach the upstream after it, uncounted in that ``remaining`` (seen with async
clients, where a grant and its send are apart)."""


def active(bucket: BucketState, now: float) -> bool:
    """The bucket is inside a published quota window."""
    return bucket.quota_left is not None and now < bucket.quota_until


def refill_rate(bucket: BucketState) -> float:
    """The rate the bucket refills at since ``ts``: capped by the quota's pace while it runs."""
    if bucket.quota_left is not None and bucket.ts < bucket.quota_until:
        return min(bucket.rate, bucket.quota_rate)
    return bucket.rate


def expire(bucket: BucketState, now: float) -> None:
    """Forget a quota window that has reset."""
    if bucket.quota_left is not None and now >= bucket.quota_until:
        bucket.quota_left, bucket.quota_until, bucket.quota_rate = None, 0.0, 0.0


def open_window(bucket: BucketState, now: float, units: float, window: float) -> None:
    """Start the fixed window ``now`` falls in (aligned to multiples of ``window`` since the
    epoch): ``units`` to spend until it ends, none refilled meanwhile (a quota of pace 0)."""
    bucket.quota_left = units
    bucket.quota_until = (math.floor(now / window) + 1) * window  # (as limiter.lua floors)
    bucket.quota_rate = 0.0
    bucket.tokens = units
    bucket.ts = now


def window_slot(bucket: BucketState, lim: LimitParams, cost: float) -> float:
    """When ``cost`` fits a bucket that refills at pace 0 until its quota ends: that end,
    or, for a fixed window already owed more than its end brings back, the start of the
    window that pays the debt (each window brings ``burst`` units)."""
    if lim.window <= 0:
        return bucket.quota_until
    short = cost - bucket.tokens - lim.burst  # still missing once the next window opens
    later = max(0.0, math.ceil(short / lim.burst - 1e-9))
    return bucket.quota_until + later * lim.window


def hold_until(bucket: BucketState, now: float, cost: float) -> float:
    """The earliest time the quota allows ``cost`` (``now`` when it does already)."""
    if active(bucket, now) and bucket.quota_left is not None and bucket.quota_left < cost:
        return bucket.quota_until
    return now


def spend(bucket: BucketState, now: float, cost: float) -> None:
    """Charge ``cost`` to the quota window, when one runs."""
    if active(bucket, now) and bucket.quota_left is not None:
        bucket.quota_left -= cost


def apply(state: KeyState, now: float, limits: Sequence[LimitParams], feedback: Feedback) -> None:
    """Apply a response's cost corrections and published quotas to ``state``."""
    for lim in limits:
        if lim.window < 0:  # a sliding window: its costs are known when granted (sliding.py)
            continue
        bucket = state.buckets[lim.name]
        delta = feedback.adjust.get(lim.name, 0.0)
        if delta:
            bucket.tokens = min(lim.burst, bucket.tokens - delta)
            spend(bucket, now, delta)
        published = feedback.quotas.get(lim.name)
        if published is None or published[1] <= 0:
            continue
        remaining, reset_after = published
        if lim.name == PRIMARY_LIMIT and feedback.seq is not None:
            remaining -= max(0, state.seq - feedback.seq) + IN_FLIGHT_MARGIN
        remaining = max(0.0, remaining)
        bucket.quota_left = remaining
        bucket.quota_until = now + reset_after
        bucket.quota_rate = remaining / reset_after
        bucket.tokens = min(bucket.tokens, remaining)
