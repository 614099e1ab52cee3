"""One decision or report on states a store has loaded: what every store that keeps limiter
state as Python objects (``MemoryBackend``, ``SQLiteBackend``) runs in its transaction.

Pure: the store loads a key's state, its integration's breaker and, with a chain, the
integration-wide level's state and fair shares; these functions apply the rules of
``aimd``, ``chain`` and ``fair`` to them; the store saves what they changed.
"""

from __future__ import annotations

from queue_ratelimit.policy import admission, aimd, chain, climb, fair, quota
from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy.state import (
    BACKOFF,
    FAILURE,
    SUCCESS,
    AcquireRequest,
    Decision,
    KeyState,
    Plan,
    Report,
    ReportResult,
    new_state,
)

__all__ = ["acquire", "bump", "claim", "claimable", "report", "start"]


def bump(state: KeyState, event: str) -> None:
    """Count ``event`` on the key (``Backend.count``, ``stats``)."""
    state.counts[event] = state.counts.get(event, 0) + 1


def start(
    entry: tuple[KeyState, float] | None, now: float, plan: Plan, remember_for: float
) -> KeyState:
    """The key's state from its stored ``(state, expiry)``: itself while it lives, revived
    from what it learned while remembered (``remember_for`` past its expiry), else new."""
    if entry is not None and now < entry[1]:
        return entry[0]
    if entry is not None and now < entry[1] + remember_for:
        return climb.revive(entry[0], now, plan.limits)
    return new_state(now)


def acquire(
    state: KeyState,
    breaker: brk.BreakerState,
    now: float,
    upper: KeyState | None,
    shares: fair.FairState | None,
    plan: Plan,
    request: AcquireRequest,
    idle_ttl: float,
) -> tuple[Decision, bool]:
    """Decide ``request`` (``admission.acquire``, with the chain's level when ``upper`` is given
    and the tenants' fair ``shares`` when the plan shares fairly); whether ``upper`` changed."""
    level = chain.level(upper, plan, request.costs, now, shares, request.tenant)
    decision = admission.acquire(state, breaker, now, plan, request, level)
    if shares is not None and level is not None and level.share is not None:
        fair.save_share(shares, level.share, now, idle_ttl)
    if not decision.granted and request.refusal_event:
        bump(state, request.refusal_event)
    return decision, decision.granted


def claimable(plan: Plan, request: AcquireRequest) -> bool:
    """Whether slots for ``request`` may be claimed ahead (``claim``): a plain acquire on
    token buckets alone (``Plan.claimable``). A concurrency limit's leases, an
    integration-wide level and its fair shares, and windows (which count a grant at the time
    it is made) are decided one acquire at a time, as are a reservation's redemption and an
    acquire that asks for the tokens left."""
    return (
        request.reservation is None
        and request.lease_id is None
        and not request.tokens
        and plan.claimable
    )


def claim(
    state: KeyState,
    breaker: brk.BreakerState,
    now: float,
    plan: Plan,
    request: AcquireRequest,
    idle_ttl: float,
    most: int,
    ahead: float,
) -> list[Decision]:
    """Decide ``request`` (``acquire``), then, when it is granted, up to ``most - 1`` more
    acquires like it while their slots are within ``ahead`` seconds of its: the slots, in
    order, of a process's next calls, decided by the same rules as one at a time (each
    paid, the arrival schedule moved on by each), as if they had all been asked at
    ``now``. The first refusal ends the claim and is dropped (made without a reservation,
    it changed nothing). A claimable ``request`` only (``claimable``: no integration-wide
    level)."""
    first, _ = acquire(state, breaker, now, None, None, plan, request, idle_ttl)
    decisions = [first]
    more = request._replace(reserve=False, refusal_event=None)
    last = first
    while (
        len(decisions) < most
        and last.granted
        and last.reason == "ok"
        and last.wait - first.wait <= ahead
    ):
        last = admission.acquire(state, breaker, now, plan, more)  # (no level, no event)
        if last.granted:
            decisions.append(last)
    return decisions


def report(
    state: KeyState,
    breaker: brk.BreakerState,
    now: float,
    upper: KeyState | None,
    plan: Plan,
    report: Report,
) -> tuple[ReportResult, bool]:
    """Apply ``report`` (its lease given back, a published quota, the AIMD rule of its kind,
    the breaker); whether ``upper``, the chain's level, changed."""
    if report.lease_id:
        aimd.release(state, report.lease_id)
    aimd.sync_buckets(state, now, plan.limits)
    quota.apply(state, now, plan.limits, report.feedback)
    before = breaker.state
    if report.kind == BACKOFF:
        bump(state, "backoffs")
    if upper is not None:
        result = chain.report(state, upper, now, plan, report)
    elif report.kind == BACKOFF:
        result = aimd.on_backoff(state, now, plan, report)
    elif report.kind == FAILURE:
        result = aimd.on_failure(state, now, plan.limits)
    else:
        result = aimd.on_success(state, now, plan)
    if report.kind == FAILURE:
        brk.on_failure(breaker, now, plan.breaker_threshold, plan.breaker_open_seconds)
    elif report.kind == SUCCESS:
        brk.on_success(breaker)
    touched = report.kind == SUCCESS or (
        report.kind == BACKOFF and chain.level_of(report, plan) != chain.TENANT
    )
    return aimd.with_breaker(result, breaker, before), touched
