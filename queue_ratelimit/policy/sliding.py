"""A sliding window: at most ``burst`` units granted in any span of ``slide`` seconds, exactly.

A token bucket of the same rate and burst lets up to twice its burst through in some
window (a full bucket, then a window's refill); an upstream that counts a sliding window
("100 per minute", any minute) answers 429 to the second half. The limit keeps, for each
unit granted within its last window, the time it leaves the window, ``slide`` seconds
after its grant (``BucketState.leaves``, in order, one entry per unit, at most
``limit_config.SLIDING_MAX``):

* a call's slot is the later of the last grant's (grants keep their order, as the arrival
  schedule does) and the moment enough of the window's units have left it;
* it pays when granted, at its slot (a refusal reserves nothing on it, as a chain's
  integration-wide level reserves nothing, and a redeemed reservation asks it again);
* a backoff leaves it as it is: the upstream counted those calls;
* a call is granted no more than one window ahead (``beyond``): a window keeps at most
  twice its units;
* what a response corrects (a cost's adjustment, a published quota) does not reach it:
  its costs are known when the call is granted.

It is exact at the slots it grants: a call sent later than its slot (a task slow to start)
is counted by the upstream later too, and may then find the units of the calls after it.

Free of I/O and clocks; ``backends/lua/limiter.lua`` implements the same (``slide_slot``).
"""

from __future__ import annotations

import bisect

from queue_ratelimit.policy.state import BucketState, LimitParams


def prune(bucket: BucketState, now: float) -> None:
    """Forget the units that left the window by ``now`` (no later slot can count them)."""
    gone = bisect.bisect_right(bucket.leaves, now)
    if gone:
        del bucket.leaves[:gone]


def slot(bucket: BucketState, now: float, lim: LimitParams, cost: float) -> float:
    """The earliest time from ``now`` on at which ``cost`` units fit the window."""
    leaves = bucket.leaves
    start = max(now, leaves[-1] - lim.slide) if leaves else now
    first = bisect.bisect_right(leaves, start)  # the first unit still in the window then
    over = len(leaves) - first + _units(cost, lim) - int(lim.burst)
    if over <= 0:
        return start
    return leaves[first + over - 1]


def take(bucket: BucketState, at: float, lim: LimitParams, cost: float) -> None:
    """Grant ``cost`` units at ``at`` (no earlier than the last grant)."""
    bucket.leaves.extend([at + lim.slide] * _units(cost, lim))


def beyond(slot: float, now: float, lim: LimitParams) -> bool:
    """A slot more than a window ahead: not granted (the call is refused, and asks again),
    so that a window keeps at most twice its units, whatever the caller's ``max_wait``."""
    return slot - now > lim.slide


def _units(cost: float, lim: LimitParams) -> int:
    """The units a call takes: its cost, at most the window's (an outage fallback's share
    of a window may hold fewer than a cost its config allows: the call takes them all)."""
    return int(min(cost, lim.burst))


def left(bucket: BucketState, at: float, lim: LimitParams) -> float:
    """Units the window holds free at ``at``."""
    return lim.burst - (len(bucket.leaves) - bisect.bisect_right(bucket.leaves, at))
