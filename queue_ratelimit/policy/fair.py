"""Fair share of a chain's integration-wide level among the tenants that use it.

With ``fair_share`` (the default with an ``app_limit``), each tenant also has a share
bucket: its weight's part of the integration-wide level's rate, among the tenants active
now (``weights``; others weigh 1), so a tenant with a backlog takes its part and no more
while the others ask. A tenant is active ``GRACE`` seconds past its last call, and for as
long as its booked share lasts (its reservations); a tenant whose share stayed full for more
than one call's time before it asked uses less than its share, and counts in no one's (it
gets what it asks for, and the others split the rest). Max-min fair: when the level's own bucket
holds more than the other active tenants' parts of its burst, a tenant borrows it, without
its share (what one tenant leaves unused goes to the others at once). A refused call books
its share with its reservation (``Reservation.due``'s last mark): its holders come back at
its share, and a redeemed call waits for its booked share at the rate of now (a tenant's
share shrinks as others arrive, and so do its bookings). A holder whose slot has come but
that is sent back (the schedules, its line, its share) is told its own place to come back
(``tell``): one interval after the place its tenant's last such holder was told, so a
tenant's due holders come back one at a time, not together to race for the next unit
(``benchmarks/fair_replay.py``: a backlog's tail 104-119 requeues a second before, 1-3
after). Share buckets of tenants idle past ``idle_ttl`` are forgotten, as their keys are.

``limiter.lua`` holds the same rules (``open_share``, ``save_share``): the buckets in a hash
and the tenants' active times in a sorted set, under the integration's hash tag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from queue_ratelimit.policy import quota
from queue_ratelimit.policy.state import BucketState, KeyState, LimitParams, Plan

GRACE = 1.0
"""Seconds a tenant counts as active after its last call (past its booked share)."""
USAGE = 2.0
"""Seconds over which what the tenants using less than their share take is averaged."""
PRUNE_BATCH = 100
"""Idle tenants forgotten per decision at most (the oldest first)."""


@dataclass
class FairState:
    """An integration's share buckets and when each tenant stops counting as active."""

    shares: dict[str | None, BucketState] = field(default_factory=dict)
    active: dict[str | None, float] = field(default_factory=dict)
    used: tuple[float, float] = (0.0, 0.0)  # what light tenants take per second, and when
    told: dict[str | None, float] = field(default_factory=dict)  # see ``tell``


@dataclass
class Share:
    """A tenant's share bucket as one acquire meets it."""

    tenant: str | None
    bucket: BucketState  # its rate: the tenant's share now
    cost: float
    borrow: bool  # the level's bucket holds more than the others' parts: no share needed
    full: float  # since when the share has been full: unused
    used: float  # what the tenants using less than their share take per second, now
    spent: bool = False  # the call was granted
    unbooked: bool = False  # a redeemed call with no share booked: it pays as a new call
    told: float = 0.0  # the place the tenant's last holder sent back was told (``tell``)


def _weight(plan: Plan, tenant: str | None) -> float:
    return dict(plan.weights).get(tenant, 1.0) if tenant is not None else 1.0


def open_share(
    fair: FairState,
    tenant: str | None,
    plan: Plan,
    upper: KeyState,
    app_costs: Mapping[str, float],
    now: float,
) -> Share:
    """The tenant's share bucket, brought to ``now`` at its share of the level's rate."""
    assert plan.app is not None
    weight = _weight(plan, tenant)
    fair.active[tenant] = max(fair.active.get(tenant, float("-inf")), now)
    since = now - GRACE
    total = sum(1 for seen in fair.active.values() if seen >= since) + weight - 1
    for other, other_weight in plan.weights:
        if other != tenant and fair.active.get(other, float("-inf")) >= since:
            total += other_weight - 1
    up_limit: LimitParams = plan.app.limits[0]
    up = upper.buckets[up_limit.name]
    pace = quota.refill_rate(up)
    if pace <= 0:  # a window's: its nominal rate
        pace = up.rate
    used, used_at = fair.used if fair.used[1] else (0.0, now)
    used *= math.exp(-(now - used_at) / USAGE)
    rate = max(pace - used, pace / (total + 1)) * weight / total
    burst = max(1.0, up_limit.burst * weight / total)
    bucket = fair.shares.get(tenant)
    if bucket is None:
        bucket = BucketState(rate=rate, tokens=burst, ts=now)
    bucket.rate = rate
    full = now  # since when the share has been full (unused): a full one keeps its ts
    if bucket.tokens >= burst:
        bucket.tokens, full = burst, bucket.ts
    elif now > bucket.ts:
        before = bucket.tokens
        full = bucket.ts + (burst - before) / rate
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.ts) * rate)
        bucket.credit += max(0.0, bucket.tokens - before)
        bucket.ts = min(now, full)  # (full since then: its ts says so)
    cost = app_costs.get(up_limit.name, 0.0)
    borrow = up.tokens - cost >= up_limit.burst * (total - weight) / total
    return Share(tenant, bucket, cost, borrow, full, used, told=fair.told.get(tenant, 0.0))


def slot(share: Share, now: float) -> float:
    """When the share holds the call's cost (``now`` when it borrows)."""
    bucket = share.bucket
    if share.borrow or share.cost <= 0 or share.cost <= bucket.tokens:
        return now
    return max(now, max(bucket.ts, now) + (share.cost - bucket.tokens) / bucket.rate)


def booked_slot(share: Share, due: tuple[float, ...], limits: int, now: float) -> float:
    """When a redeemed call's booked share comes (its reservation's last mark), at the
    share's rate now; with none booked, as for a new call (``unbooked``: it pays then)."""
    bucket = share.bucket
    if share.borrow:
        return now
    mark = due[limits] if len(due) > limits else None
    owed = 0.0 if mark is None or mark < 0 else mark - bucket.credit
    # none booked (it borrowed then: -1), or a mark past all the share owes (of a bucket
    # forgotten since): the share as for a new call
    if mark is None or mark < 0 or owed > max(0.0, -bucket.tokens) + 1e-6:
        share.unbooked = True
        return slot(share, now)
    return now if owed <= 0 else max(bucket.ts, now) + owed / bucket.rate


def spend(share: Share, now: float, redeemed: bool) -> None:
    """A granted call: its share pays (unless it borrows, or paid when it was booked)."""
    share.spent = True
    if not redeemed or share.unbooked:
        pay(share, now)


def book(share: Share, now: float) -> float:
    """A refused call books its share with its reservation (unless it borrows): the mark
    its holder's share must reach, or -1 (none booked)."""
    if share.borrow:
        return -1.0
    pay(share, now)
    return share.bucket.credit - share.bucket.tokens


def pay(share: Share, now: float) -> None:
    """Take the call's cost from the share (not when it borrows)."""
    if not share.borrow:
        share.bucket.tokens -= share.cost
        share.bucket.ts = now


def tell(share: Share, back: float, interval: float) -> float:
    """When a due holder the schedules sent back comes back: at ``back``, and no sooner than
    one ``interval`` after the place the tenant's last such holder was told, so that they
    come back one at a time rather than together."""
    told = max(back, share.told)
    share.told = told + interval
    return told


def save_share(fair: FairState, share: Share, now: float, idle_ttl: float) -> None:
    """Keep the share; its tenant active until its booked share is served; forget the
    tenants idle past ``idle_ttl`` (``PRUNE_BATCH`` at most, the oldest first)."""
    bucket = share.bucket
    fair.shares[share.tenant] = bucket
    until = max(now, bucket.ts + max(0.0, -bucket.tokens) / bucket.rate)
    if bucket.tokens >= 0 and now - share.full > share.cost / bucket.rate:
        until = now - GRACE - 0.000001  # it used less than its share: counts in no one's
        if share.spent:  # (but in what the others share)
            fair.used = (share.used + share.cost / USAGE, now)
    fair.active[share.tenant] = until
    if share.told > now:
        fair.told[share.tenant] = share.told
    else:
        fair.told.pop(share.tenant, None)
    gone = sorted(
        (seen, "" if tenant is None else tenant, tenant)
        for tenant, seen in fair.active.items()
        if seen <= now - idle_ttl
    )
    for _, _, tenant in gone[:PRUNE_BATCH]:
        del fair.active[tenant]
        fair.shares.pop(tenant, None)
        fair.told.pop(tenant, None)
