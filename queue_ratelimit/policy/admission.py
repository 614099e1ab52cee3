"""How an acquire is decided on a key's token buckets: slots, waits, reservations, pacing;
free of I/O and clocks. The state and the rest of the rules: ``aimd.py``, and ``redeem.py``
for a reservation's holder (the reference semantics with this module;
``backends/lua/limiter.lua`` implements the same).

Rules (``now`` is always passed in, in seconds):

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
  waited for; a void reservation is treated as a fresh acquire. With fair share, a holder
  whose slot has come but that is sent back (the schedules, its line, its share) is told
  its own place to come back, one interval after its tenant's last one told (``_told``).
* pacing: every grant moves an arrival schedule on (``pacing``). A holder that comes back
  after its slot is granted no sooner than the schedule allows, if that is within
  ``max_wait`` (else it goes back, holding its reservation, told to come back then). Once
  the key is past its start phase, every other call too is granted no sooner than the
  schedule allows, but at most ``max_wait`` later than its slot, and never sent back for
  it. Calls reach the upstream at the rate even when their holders come back late and
  together. A published quota's reset ends a schedule laid at its pace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from queue_ratelimit.config import PRIMARY_LIMIT
from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy import fair, pacing, quota, redeem, sliding
from queue_ratelimit.policy.aimd import sync_buckets
from queue_ratelimit.policy.breaker import BreakerState
from queue_ratelimit.policy.climb import growth, starting
from queue_ratelimit.policy.state import (
    AcquireRequest,
    Decision,
    KeyState,
    LimitParams,
    Plan,
    Reservation,
)

if TYPE_CHECKING:
    from queue_ratelimit.policy.chain import Level

SLACK = 1e-6
"""A wait this much above ``max_wait`` still counts as within it: float noise, and replies
from Redis that carry microseconds."""


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
    share_at = now if chain is None else redeem.share_slot(chain, kept, len(limits), now)
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
    recheck = redeem.recheck(state, now, limits, due, wait, growth(state, plan), cooldown_until)
    recheck = max(recheck, _slid(state, now, limits, request.costs) - now)  # (it reserves none)
    recheck = max(recheck, paced - now)  # (nor sooner than the arrival schedule allows)
    if chain is not None:  # (not sooner than that level, and the tenant's share, pay it)
        recheck = max(recheck, chain.slot - now, share_at - now)
        if kept is not None and chain.share is not None:
            recheck = _told(state, now, limits, kept, chain, recheck)
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


def _told(
    state: KeyState,
    now: float,
    limits: Sequence[LimitParams],
    kept: Reservation,
    chain: Level,
    recheck: float,
) -> float:
    """When a holder whose own slot has come, sent back by the schedules, its line or its
    share, comes back: at its own place, one interval after the place the tenant's last such
    holder was told (``fair.tell``). Told the same moment, a tenant's due holders would come
    back together, one would go, and the rest would be sent back again, each time through a
    worker and the broker. The interval is of the faster pace the tenant may be served at
    (the slower of its key's and the integration's), not its share's: a share grows when
    others leave, and a holder told too late leaves the rate unused, told too early it is
    only told again."""
    assert chain.share is not None
    up = chain.state.buckets[chain.plan.limits[0].name]
    pace = min(quota.refill_rate(state.buckets[limits[0].name]), quota.refill_rate(up) or up.rate)
    if pace <= 0 or redeem.pulled(state, now, limits, kept) > now:
        return recheck  # (its own slot to come: its recheck is its own already)
    return fair.tell(chain.share, now + recheck, 1.0 / pace) - now


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
        pulled = redeem.pulled(state, now, limits, kept)
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
