"""AIMD over a token bucket: how a key's state refills and how reports move its rates, free
of I/O and clocks (``admission.py``: how an acquire is decided on it).

These two modules are the reference semantics. ``backends/lua/limiter.lua`` implements the
same rules inside Redis; ``tests/unit/test_limiter_behaviour.py`` runs one suite against
both.

The state of one limiter key (an integration, or an integration and a tenant):

* per limit (``requests``, and any extra such as ``tokens``): ``rate`` (units per second),
  ``tokens`` and ``ts``, the time at which ``tokens`` is valid. ``tokens`` may be negative:
  that is debt owed by reservations and by granted-after-a-wait calls. ``ts`` may lie in the
  future: that is a cooldown, during which the bucket does not refill.
* ``epoch``: changes on every multiplicative decrease. A decision carries the epoch it was
  made in; a reservation made in an older epoch is void, and a backoff reported from an older
  epoch belongs to a congestion event already reacted to (so it does not decrease again).
* ``cooldown_until``: nothing is granted before it.
* ``leases``: concurrency leases, lease id to expiry time.

Rules (``now`` is always passed in, in seconds):

* refill: if ``now > ts``: ``tokens = min(burst, tokens + (now - ts) * rate)``, ``ts = now``.
* start: while the key has met no backoff (no ``peak``, none remembered) and the plan's
  ``slow_start`` is on, a success adds ``max(increase, START_GROWTH)`` to the requests rate
  (the rate e-folds about every second while demand keeps up), but never past
  ``START_HEADROOM`` times the delivered rate (a key younger than the delivery window
  counts over its age, so its first second climbs too): an idle key does not climb, and the rate
  meets the upstream's limit at most about twice over (the first 429 ends the phase, and
  the decrease to what was served lands near the limit at once). Further limits with an
  ``increase`` grow by the same factor. The first backoff ends the phase for good.
* success: ``rate = min(max_rate, rate + step)`` per limit, except during a cooldown. The
  step is ``increase`` (so the rate climbs exponentially in time, as successes come at the
  rate), except from ``PROBE_FLOOR`` of ``peak`` (the rate served at the last decrease) up
  to ``peak`` itself: there the rate follows the time since that decrease, crossing the band
  in ``BAND`` seconds (``peak * (PROBE_FLOOR + (1 - PROBE_FLOOR) * t / BAND)``), never
  faster than ``increase`` per success. The fleet climbs fast back to just below the
  ceiling it last met, approaches it slowly whatever its scale, and climbs fast again once
  past it (the limit rose, or the next 429 comes at once). Congestion events, each costing
  a cooldown (a whole ``Retry-After``), come about every ``BAND`` seconds when the limit
  holds.
* delivery: every success is counted in slices of ``DELIVERY_WINDOW / SLICES``; the
  delivered rate is the count of the current slice and the whole ones within the window,
  plus the oldest slice weighted by how much of it still lies within the last
  ``DELIVERY_WINDOW`` (a sliding-window estimate, whose error is a fraction of one slice).
* backoff: a new congestion event (its epoch is the current one; or, with no epoch given, no
  cooldown is running) multiplies each rate by ``decrease`` (clamped to ``min_rate``), moves
  the epoch on, records each rate before the decrease as its ``peak`` (for ``requests``, the
  delivered rate when successes were counted and it is lower: the rate sent when the 429
  came overshoots the limit, the rate served does not; a delivered rate within ``NOISE``
  below the ``ceiling`` served since the last event counts as that ceiling), forgives all
  debt (``tokens = 0``) and the arrival schedule, and opens a cooldown of ``retry_after``
  (stated by the upstream: clamped to ``[0, max_quota_wait]``) or, without one,
  ``cooldown_multiplier / rate`` (clamped to ``max_backoff``). When successes were counted,
  ``requests`` decreases no lower than ``PROBE_FLOOR`` of the delivered rate: a 429 with
  nearly every call served says the limit is just there, and a 429 among many says so too
  (what is served is then far below what is sent, and the multiplicative decrease is the
  deeper one). A backoff from an event already reacted to only extends the cooldown to its
  ``retry_after``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from queue_ratelimit.config import PRIMARY_LIMIT
from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy import pacing, quota, sliding
from queue_ratelimit.policy.breaker import BreakerState
from queue_ratelimit.policy.climb import (
    NOISE,
    PROBE_FLOOR,
    START_HEADROOM,
    growth,
    probe_step,
    starting,
)
from queue_ratelimit.policy.delivery import delivered, record
from queue_ratelimit.policy.state import (
    BucketState,
    KeyState,
    LimitParams,
    LimitSnapshot,
    Plan,
    Report,
    ReportResult,
    Snapshot,
    epoch_at,
)


def sync_buckets(state: KeyState, now: float, limits: Sequence[LimitParams]) -> None:
    """Create missing buckets, clamp rates to the configured bounds and refill to ``now``."""
    for lim in limits:
        bucket = state.buckets.get(lim.name)
        if bucket is None:
            bucket = state.buckets[lim.name] = BucketState(rate=lim.rate, tokens=lim.burst, ts=now)
        bucket.rate = min(max(bucket.rate, lim.min_rate), lim.max_rate)
        if now > bucket.ts:
            refill = (now - bucket.ts) * quota.refill_rate(bucket)
            before = bucket.tokens
            bucket.tokens = min(lim.burst, bucket.tokens + refill)
            bucket.credit += max(0.0, bucket.tokens - before)
            bucket.ts = now
        if lim.window > 0 and bucket.quota_left is not None and now >= bucket.quota_until:
            owed = min(0.0, bucket.quota_left)  # calls paid ahead of the window now opening
            quota.open_window(bucket, now, lim.burst + owed, lim.window)
        if bucket.quota_left is not None and now >= bucket.quota_until and lim is limits[0]:
            state.paced_until = min(state.paced_until, now)  # (laid at the quota's pace)
        quota.expire(bucket, now)
        if lim.window > 0 and bucket.quota_left is None:
            quota.open_window(bucket, now, lim.burst, lim.window)
        if lim.window < 0:
            sliding.prune(bucket, now)


def on_success(state: KeyState, now: float, plan: Plan) -> ReportResult:
    """Count the delivery; increase every limit (the start phase's or additive), unless a
    cooldown is running."""
    limits = plan.limits
    sync_buckets(state, now, limits)
    record(state, now)
    first = state.buckets[PRIMARY_LIMIT]
    old = first.rate
    if now >= state.cooldown_until and starting(state, plan):
        cap = START_HEADROOM * delivered(state, now, age=now - state.epoch / 1_000_000)
        first.rate = min(limits[0].max_rate, max(old, min(old + growth(state, plan), cap)))
        for lim in limits[1:]:  # further limits grow by the same factor
            if lim.increase > 0:
                bucket = state.buckets[lim.name]
                bucket.rate = min(lim.max_rate, bucket.rate * first.rate / old)
    elif now >= state.cooldown_until:
        since = now - state.epoch / 1_000_000  # since the last decrease (epoch_at)
        for lim in limits:
            bucket = state.buckets[lim.name]
            step = probe_step(bucket.rate, bucket.peak, lim.increase, since)
            bucket.rate = min(lim.max_rate, bucket.rate + step)
    new = first.rate
    return ReportResult(state.epoch, False, old, new, max(0.0, state.cooldown_until - now))


def on_backoff(state: KeyState, now: float, plan: Plan, report: Report) -> ReportResult:
    """Multiplicative decrease once per congestion event, and a cooldown."""
    limits, epoch, retry_after = plan.limits, report.epoch, report.retry_after
    max_backoff = plan.max_backoff
    sync_buckets(state, now, limits)
    old = state.buckets[PRIMARY_LIMIT].rate
    new_event = state.epoch == epoch if epoch is not None else now >= state.cooldown_until
    if retry_after is not None:  # stated by the upstream: honoured up to max_quota_wait
        retry_after = min(max(retry_after, 0.0), plan.max_quota_wait)
    held = state.cooldown_until
    if new_event:
        overshot = starting(state, plan)  # the start phase's climb met the limit
        served = delivered(state, now)
        if NOISE * state.ceiling <= served < state.ceiling:  # the same limit, counted short
            served = state.ceiling
        for lim in limits:
            bucket = state.buckets[lim.name]
            bucket.peak = bucket.rate
            target = bucket.rate * lim.decrease
            if lim.name == PRIMARY_LIMIT and served > 0:
                bucket.peak = min(bucket.rate, served)
                target = min(bucket.rate, max(target, PROBE_FLOOR * served))
                if overshot:  # sent up to twice what was served: land below what was
                    target = PROBE_FLOOR * bucket.peak
                state.ceiling = min(state.ceiling, bucket.peak)  # served since: learned anew
            bucket.rate = max(lim.min_rate, target)
        state.epoch = max(state.epoch + 1, epoch_at(now))
        pause = retry_after
        if pause is None:
            pause = min(plan.cooldown_multiplier / state.buckets[PRIMARY_LIMIT].rate, max_backoff)
        state.cooldown_until = max(state.cooldown_until, now + pause)
        for lim in plan.limits:  # (a window's allowance is not the upstream's to cut)
            if lim.window == 0 and lim.name in state.buckets:
                bucket = state.buckets[lim.name]
                bucket.tokens = 0.0
                bucket.ts = state.cooldown_until
        pacing.forgive(state)
    elif retry_after is not None and now + retry_after > state.cooldown_until:
        state.cooldown_until = now + retry_after
        for bucket in state.buckets.values():
            bucket.ts = max(bucket.ts, state.cooldown_until)
    new = state.buckets[PRIMARY_LIMIT].rate
    left = max(0.0, state.cooldown_until - now)
    exhausted = state.cooldown_until > held and left > max_backoff  # (announced once)
    return ReportResult(state.epoch, new_event, old, new, left, exhausted=exhausted)


def on_failure(state: KeyState, now: float, limits: Sequence[LimitParams]) -> ReportResult:
    """A failed call (5xx, timeout): no rate change; the breaker counts it (``breaker.py``)."""
    sync_buckets(state, now, limits)
    rate = state.buckets[PRIMARY_LIMIT].rate
    return ReportResult(state.epoch, False, rate, rate, max(0.0, state.cooldown_until - now))


def with_breaker(result: ReportResult, breaker: BreakerState, before: str) -> ReportResult:
    """``result`` completed with the breaker's state after the report."""
    return dataclasses.replace(
        result, breaker=breaker.state, breaker_changed=breaker.state != before
    )


def release(state: KeyState, lease_id: str) -> bool:
    """Give a concurrency lease back; False when it had already expired or was unknown."""
    return state.leases.pop(lease_id, None) is not None


def idle_expiry(state: KeyState, now: float, idle_ttl: float) -> float:
    """Seconds the key must live: ``idle_ttl`` past the end of its cooldown and its debts."""
    busy = max(0.0, state.cooldown_until - now, state.paced_until - now)
    for bucket in state.buckets.values():
        busy = max(busy, max(0.0, bucket.ts - now) + max(0.0, -bucket.tokens) / bucket.rate)
        if bucket.quota_rate == 0.0 and bucket.quota_left is not None:  # a window runs: kept
            busy = max(busy, bucket.quota_until - now)  # (else an idle key would start anew)
        if bucket.leaves:  # a sliding window: until its last unit leaves it
            busy = max(busy, bucket.leaves[-1] - now)
    if state.leases:
        busy = max(busy, max(state.leases.values()) - now)
    return busy + idle_ttl


def fresh_views(limits: Sequence[LimitParams]) -> tuple[LimitSnapshot, ...]:
    """How a key that holds no state looks: full buckets at the starting rates."""
    return tuple(LimitSnapshot(lim.name, lim.rate, lim.burst, 0.0) for lim in limits)


def snapshot(
    state: KeyState | None, breaker: BreakerState, now: float, limits: Sequence[LimitParams]
) -> Snapshot:
    """Describe ``state`` and ``breaker`` at ``now`` without changing them."""
    held = max(0.0, breaker.until - now) if breaker.state != brk.CLOSED else 0.0
    seen = (breaker.state, breaker.failures, held)
    if state is None:
        return Snapshot(False, 0, 0.0, 0, now, fresh_views(limits), *seen)
    views = []
    for lim in limits:
        bucket = state.buckets.get(lim.name)
        if bucket is None:
            views.append(LimitSnapshot(lim.name, lim.rate, lim.burst, 0.0))
            continue
        rate = min(max(bucket.rate, lim.min_rate), lim.max_rate)
        tokens = bucket.tokens
        if now > bucket.ts:
            pace = quota.refill_rate(dataclasses.replace(bucket, rate=rate))
            tokens = min(lim.burst, tokens + (now - bucket.ts) * pace)
        if lim.window > 0 and not quota.active(bucket, now):  # a new window has begun
            tokens = lim.burst + min(0.0, bucket.quota_left or 0.0)  # (less what it owes)
        if lim.window < 0:
            tokens = sliding.left(bucket, now, lim)
        views.append(LimitSnapshot(lim.name, rate, tokens, max(0.0, -tokens)))
    live = sum(1 for expiry in state.leases.values() if expiry > now)
    cool = max(0.0, state.cooldown_until - now)
    return Snapshot(True, state.epoch, cool, live, now, tuple(views), *seen, dict(state.counts))
