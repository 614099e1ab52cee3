"""AIMD over a token bucket, with reservations: the decision rules, free of I/O and clocks.

This module is the reference semantics. ``backends/lua/limiter.lua`` implements the same
rules inside Redis; ``tests/unit/test_limiter_behaviour.py`` runs one suite against both.

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
* acquire ``cost`` per limit: the slot is the earliest time every limit holds its cost,
  ``max(cooldown_until, max over limits of max(ts, now) + max(0, cost - tokens) / rate)``.
  If the call fits ``max_wait`` it is granted (the caller sleeps ``slot - now``) and each
  limit pays its cost. It fits when ``slot - now <= max_wait`` (and, with ``max_sleepers``,
  within that many places in line), or, during a cooldown, when the cooldown left is within
  ``cooldown_wait`` (None: ``max_wait``) and the wait after it fits (``fits_wait``).
  Otherwise, when ``reserve`` is set, it pays anyway and receives a reservation for
  ``slot``; else nothing changes. A concurrency limit, when set, is checked first; a full
  one grants nothing and reserves nothing.
* exhausted: a refusal whose wait is longer than ``max_backoff`` because of what the upstream
  stated (a cooldown, a spent quota) has the reason ``exhausted``: a task gate parks the task
  until then without spending its budget. A report that moves such a hold on says so
  (``ReportResult.exhausted``), once per move.
* redeem a reservation: same epoch means already paid, so only ``slot`` and the cooldown are
  waited for; a void reservation is treated as a fresh acquire.
* pacing: every grant moves an arrival schedule on (``pacing``). A holder that comes back
  after its slot is granted no sooner than the schedule allows, if that is within
  ``max_wait`` (else it goes back, holding its reservation, told to come back then). Once
  the key is past its start phase, every other call too is granted no sooner than the
  schedule allows, but at most ``max_wait`` later than its slot, and never sent back for
  it. Calls reach the upstream at the rate even when their holders come back late and
  together. A published quota's reset ends a schedule laid at its pace.
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
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from queue_ratelimit.config import PRIMARY_LIMIT
from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy import fair, pacing, quota, sliding
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
    AcquireRequest,
    BucketState,
    Decision,
    KeyState,
    LimitParams,
    LimitSnapshot,
    Plan,
    Report,
    ReportResult,
    Reservation,
    Snapshot,
    epoch_at,
)

if TYPE_CHECKING:
    from queue_ratelimit.policy.chain import Level

SLACK = 1e-6
"""A wait this much above ``max_wait`` still counts as within it: float noise, and replies
from Redis that carry microseconds."""


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


def slot_of(
    state: KeyState, now: float, limits: Sequence[LimitParams], costs: Mapping[str, float]
) -> float:
    slot = max(now, state.cooldown_until)
    for lim in limits:
        cost = costs.get(lim.name, 0.0)
        if cost <= 0:
            continue
        bucket = state.buckets[lim.name]
        if lim.window < 0:
            slot = max(slot, sliding.slot(bucket, now, lim, cost))
            continue
        pace = quota.refill_rate(bucket)
        if cost > bucket.tokens and pace <= 0:
            slot = max(slot, quota.window_slot(bucket, lim, cost))
        elif cost > bucket.tokens:
            slot = max(slot, max(bucket.ts, now) + (cost - bucket.tokens) / pace)
        slot = max(slot, quota.hold_until(bucket, now, cost))
    return slot


def line_allowance(max_wait: float, max_sleepers: int | None, pace: float) -> float:
    """The longest wait for a place in line slept in the caller: ``max_wait``, and with
    ``max_sleepers`` no more than that many places (``max_sleepers / pace`` seconds)."""
    in_line = max_wait + SLACK
    if max_sleepers is not None and pace > 0:
        in_line = min(in_line, max_sleepers / pace + SLACK)
    return in_line


def fits_wait(
    now: float,
    slot: float,
    cooldown_until: float,
    *,
    max_wait: float,
    cooldown_wait: float | None = None,
    max_sleepers: int | None = None,
    pace: float = 0.0,
) -> bool:
    """Whether a wait until ``slot`` is slept in the caller rather than requeued.

    The wait for a place in line counts up to ``max_wait``, and with ``max_sleepers`` up to
    that many places (``max_sleepers / pace`` seconds, ``pace`` being the requests refill
    rate): a tenant's backlog then holds at most that many sleeping workers, and the others
    move on to the tasks queued behind it.

    A cooldown counts apart, up to ``cooldown_wait`` (None: ``max_wait``): it holds back
    every task of the bucket alike, so on a worker that serves only this integration's
    queue, a task requeued for it would free the worker only for the next task of the queue
    to meet it too, and a backlog would be requeued whole.
    """
    in_line = line_allowance(max_wait, max_sleepers, pace)
    if slot - now <= in_line:
        return True
    cooldown = max_wait + SLACK if cooldown_wait is None else cooldown_wait + SLACK
    return now < cooldown_until <= now + cooldown and slot - cooldown_until <= in_line


def _pay(
    state: KeyState, now: float, limits: Sequence[LimitParams], costs: Mapping[str, float]
) -> None:
    state.seq += 1
    for lim in limits:
        cost = costs.get(lim.name, 0.0)
        if lim.window < 0:  # a sliding window's units are taken at the slot (_grant)
            continue
        state.buckets[lim.name].tokens -= cost
        quota.spend(state.buckets[lim.name], now, cost)


def _concurrency_wait(state: KeyState, now: float, max_concurrent: int) -> float | None:
    """None when a lease is free; else seconds until it is worth asking again."""
    for lease_id in [k for k, expiry in state.leases.items() if expiry <= now]:
        del state.leases[lease_id]
    if len(state.leases) < max_concurrent:
        return None
    interval = 1.0 / state.buckets[PRIMARY_LIMIT].rate
    return min(min(state.leases.values()) - now, interval)


def acquire(
    state: KeyState,
    breaker: BreakerState,
    now: float,
    plan: Plan,
    request: AcquireRequest,
    chain: Level | None = None,
) -> Decision:
    """Decide one acquire (or redemption) and apply it to ``state`` and ``breaker``; with
    a chain's integration-wide level (``chain.level``), to that level too: the call waits
    for both, and is paid by both on a grant (that level reserves nothing)."""
    limits = plan.limits
    sync_buckets(state, now, limits)
    reservation = request.reservation
    redeeming = reservation is not None and reservation.epoch == state.epoch
    kept = reservation if redeeming else None
    held, probe = brk.admit(breaker, now)
    up_epoch = None if chain is None else chain.state.epoch
    if held > 0:
        return Decision(
            False, held, "breaker_open", state.epoch, kept, now, seq=state.seq, app_epoch=up_epoch
        )
    cooldown_until = state.cooldown_until  # the later of the chain's levels'
    if chain is not None:
        cooldown_until = max(cooldown_until, chain.state.cooldown_until)
    share_at = now if chain is None else _share_slot(chain, kept, len(limits), now)
    steady = not starting(state, plan)
    slot, fits, paced = _fit(
        state, now, limits, request, kept, cooldown_until, steady, chain, share_at
    )
    wait = slot - now
    if plan.max_concurrent is not None and fits:
        busy = _concurrency_wait(state, now, plan.max_concurrent)
        if busy is not None:
            return Decision(
                False,
                busy,
                "concurrency",
                state.epoch,
                kept,
                now,
                seq=state.seq,
                app_epoch=up_epoch,
            )
    if fits:
        return _grant(state, breaker, now, plan, request, slot, kept, probe, chain)
    reason = "cooldown" if cooldown_until > now else "rate"
    if wait > plan.max_backoff and (
        _held(state, now, limits, request.costs, plan.max_backoff)
        or (
            chain is not None
            and _held(chain.state, now, chain.plan.limits, chain.costs, plan.max_backoff)
        )
    ):
        reason = "exhausted"
    if not (request.reserve or redeeming):
        return Decision(
            False, wait, reason, state.epoch, None, now, seq=state.seq, app_epoch=up_epoch
        )
    if kept is None:
        _pay(state, now, limits, request.costs)
        due = tuple(
            state.buckets[lim.name].credit - state.buckets[lim.name].tokens for lim in limits
        )
        if chain is not None and chain.share is not None:  # its share is booked with it
            due += (fair.book(chain.share, now),)
    else:
        due = kept.due
    recheck = _recheck(state, now, limits, due, wait, growth(state, plan), cooldown_until)
    recheck = max(recheck, _slid(state, now, limits, request.costs) - now)  # (it reserves none)
    recheck = max(recheck, paced - now)  # (nor sooner than the arrival schedule allows)
    if chain is not None:  # (not sooner than that level, and the tenant's share, pay it)
        recheck = max(recheck, chain.slot - now, share_at - now)
    promise = Reservation(state.epoch, slot, due)
    return Decision(
        False,
        wait,
        reason,
        state.epoch,
        promise,
        now,
        seq=state.seq,
        recheck=recheck,
        app_epoch=up_epoch,
    )


def _share_slot(chain: Level, kept: Reservation | None, limits: int, now: float) -> float:
    """When the tenant's share (fair share) lets the call through: a fresh call when its
    share holds its cost, a redeemed one when its booked share comes."""
    if chain.share is None:
        return now
    if kept is not None:
        return fair.booked_slot(chain.share, kept.due, limits, now)
    return fair.slot(chain.share, now)


def _held(
    state: KeyState,
    now: float,
    limits: Sequence[LimitParams],
    costs: Mapping[str, float],
    longer: float,
) -> bool:
    """The key is held more than ``longer`` seconds by what an upstream stated: a cooldown
    or a spent published quota (not by a queue of reservations)."""
    if state.cooldown_until - now > longer:
        return True
    for lim in limits:
        bucket = state.buckets[lim.name]
        cost = costs.get(lim.name, 0.0)
        if lim.window < 0:  # a sliding window the calls before it filled
            if cost > 0 and sliding.slot(bucket, now, lim, cost) - now > longer:
                return True
        elif quota.hold_until(bucket, now, cost) - now > longer:
            return True
    return False


def _fit(
    state: KeyState,
    now: float,
    limits: Sequence[LimitParams],
    request: AcquireRequest,
    kept: Reservation | None,
    cooldown_until: float,
    steady: bool,
    chain: Level | None = None,
    share_at: float = 0.0,
) -> tuple[float, bool, float]:
    """The call's slot, whether its wait is slept (``fits_wait``) rather than requeued, and
    the arrival schedule's slot when that holds the call back (else 0: its holder comes back
    no sooner). ``cooldown_until``: the latest cooldown of the call's levels; ``steady``:
    the key is past its start phase, and every call keeps to the schedule, not only a late
    holder."""
    first = limits[0]
    pace = quota.refill_rate(state.buckets[first.name])
    late = False
    if kept is not None:
        pulled = _pulled(state, now, limits, kept)
        slot = max(pulled, cooldown_until, now, _slid(state, now, limits, request.costs))
        late = pulled < now - pacing.tolerance(pace)
    else:
        slot = slot_of(state, now, limits, request.costs)
    if chain is not None:
        slot = max(slot, chain.slot, share_at)
    line = pace  # a place in line: the slower level's interval (a tenant's share's would
    if chain is not None:  # keep a worker asleep per tenant: others' calls behind them)
        up = chain.state.buckets[chain.plan.limits[0].name]
        line = min(line, quota.refill_rate(up) or up.rate)  # (a window's: its nominal rate)
    fits = fits_wait(
        now,
        slot,
        cooldown_until,
        max_wait=request.max_wait,
        cooldown_wait=request.cooldown_wait,
        max_sleepers=request.max_sleepers,
        pace=line,
    )
    after = 0.0  # the schedule's slot, when it holds a late holder back
    requests = request.costs.get(first.name, 0.0)
    if fits and (late or steady) and requests > 0 and pace > 0:
        due = pacing.earliest(state, first.burst, requests, pace)
        if late:  # no sooner than the schedule, within max_wait
            if due > slot:
                fits = due - now <= max(request.max_wait, slot - now) + SLACK
                slot = after = due
        elif due > slot:  # on time or new: later, within max_wait (never refused for it)
            slot = max(slot, min(due, now + (request.max_wait + SLACK)))
    if fits and any(
        lim.window < 0 and request.costs.get(lim.name, 0.0) > 0 and sliding.beyond(slot, now, lim)
        for lim in limits
    ):
        fits = False
    return slot, fits, after


def _grant(
    state: KeyState,
    breaker: BreakerState,
    now: float,
    plan: Plan,
    request: AcquireRequest,
    slot: float,
    kept: Reservation | None,
    probe: bool,
    chain: Level | None = None,
) -> Decision:
    """Grant the call its ``slot``: pay (unless it redeems ``kept``), take its place in the
    arrival schedule and its lease; as the breaker's probe, start the probe's turn. A chain's
    integration-wide level pays too, and takes the call's place in its own schedule."""
    first = plan.limits[0]
    pace = quota.refill_rate(state.buckets[first.name])  # before paying: a quota's pace
    if kept is None:
        _pay(state, now, plan.limits, request.costs)
    for lim in plan.limits:  # (paid or redeemed: a sliding window takes its units now)
        if lim.window < 0 and request.costs.get(lim.name, 0.0) > 0:
            sliding.take(state.buckets[lim.name], slot, lim, request.costs[lim.name])
    pacing.advance(state, slot, request.costs.get(first.name, 0.0), pace)
    if chain is not None:
        up_first = chain.plan.limits[0]
        up_pace = quota.refill_rate(chain.state.buckets[up_first.name])
        _pay(chain.state, now, chain.plan.limits, chain.costs)
        if chain.share is not None:
            fair.spend(chain.share, now, redeemed=kept is not None)
        pacing.advance(chain.state, slot, chain.costs.get(up_first.name, 0.0), up_pace)
    lease = None
    if plan.max_concurrent is not None and request.lease_id is not None:
        state.leases[request.lease_id] = now + plan.lease_ttl
        lease = request.lease_id
    reason = "redeemed" if kept is not None else "ok"
    if probe:
        brk.start_probe(breaker, now, plan.breaker_open_seconds)
        reason = "probe"
    left = None
    if request.tokens:
        left = tuple(
            sliding.left(state.buckets[lim.name], slot, lim)
            if lim.window < 0
            else state.buckets[lim.name].tokens
            for lim in plan.limits
        )
    up_epoch = None if chain is None else chain.state.epoch
    return Decision(
        True, slot - now, reason, state.epoch, None, now, lease, state.seq, None, left, up_epoch
    )


def _slid(
    state: KeyState, now: float, limits: Sequence[LimitParams], costs: Mapping[str, float]
) -> float:
    """The latest slot the call's sliding windows allow (``now`` without any)."""
    slot = now
    for lim in limits:
        cost = costs.get(lim.name, 0.0)
        if lim.window < 0 and cost > 0:
            slot = max(slot, sliding.slot(state.buckets[lim.name], now, lim, cost))
    return slot


def _pulled(state: KeyState, now: float, limits: Sequence[LimitParams], kept: Reservation) -> float:
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


def _recheck(
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


def climb_time(units: float, rate: float, increase: float, max_rate: float) -> float:
    """Seconds to refill ``units`` starting at ``rate`` if each unit granted raises the rate
    by ``increase`` (so ``rate' = increase * rate``), up to ``max_rate``."""
    if increase <= 0 or rate >= max_rate:
        return units / rate
    cap_units = (max_rate - rate) / increase
    if units <= cap_units:
        return math.log(1 + units * increase / rate) / increase
    return math.log(max_rate / rate) / increase + (units - cap_units) / max_rate


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
