"""Chains: a call charged to its own key and to its integration's, in one decision.

An integration with an ``app_limit`` has two levels: each key (a tenant, or the integration
without one) and the integration-wide key all its keys share (``Plan.app``). An acquire
waits for the later of the two slots and is paid by both when granted; a refusal's
reservation is the key's own (the integration-wide level is paid only by the calls it lets
through, so a tenant's backlog of reservations never holds another tenant's calls back). The
integration-wide level pays when it grants, but a call its key holds back goes at its slot:
so that level's slots also follow its arrival schedule (``pacing``), in the order granted, and
never come closer than its rate allows (a token taken early is not lent again meanwhile).
Each level adapts on its own signals: a success raises both; a backoff lowers the level it is
attributed to (``Report.level``, else the plan's ``app_backoffs``: ``tenant`` by default, as
most upstreams limit each token; ``app`` when the upstream says the app's limit was met;
``both``); a failure changes neither (the breaker counts it). ``admission.acquire`` applies the
rules; the functions here are what both backends share about them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from queue_ratelimit.policy import admission, aimd, fair, quota
from queue_ratelimit.policy.state import BACKOFF, SUCCESS, KeyState, Plan, Report, ReportResult

TENANT, APP, BOTH = "tenant", "app", "both"
LEVELS = (TENANT, APP, BOTH)
"""The levels a backoff may lower (``limiter.lua`` numbers them 1, 2, 3)."""


def charged(plan: Plan, costs: Mapping[str, float]) -> dict[str, float]:
    """What a call costs the integration-wide level: each of its limits the cost of the
    key's limit of the same name, else the call's ``requests`` cost."""
    assert plan.app is not None
    own = {lim.name for lim in plan.limits}
    requests = costs.get(plan.limits[0].name, 0.0)
    return {
        lim.name: costs.get(lim.name, 0.0) if lim.name in own else requests
        for lim in plan.app.limits
    }


def level_of(report: Report, plan: Plan) -> str:
    """The level a backoff lowers: the report's, else the plan's ``app_backoffs``."""
    return report.level or plan.app_backoffs


@dataclass(frozen=True)
class Level:
    """A chain's integration-wide level as one acquire meets it (``admission.acquire``)."""

    state: KeyState
    plan: Plan
    costs: Mapping[str, float]
    slot: float  # the earliest it pays the call
    share: fair.Share | None = None  # the tenant's share of it (fair share)


def level(
    upper: KeyState | None,
    plan: Plan,
    costs: Mapping[str, float],
    now: float,
    shares: fair.FairState | None = None,
    tenant: str | None = None,
) -> Level | None:
    """The integration-wide level of ``plan`` (its key's state ``upper``), brought to ``now``
    with the call's slot on it, and with fair share (``shares``) the tenant's share of it;
    None without a chain."""
    if upper is None or plan.app is None:
        return None
    app = plan.app
    aimd.sync_buckets(upper, now, app.limits)
    cost = charged(plan, costs)
    share = None
    if plan.fair_share and shares is not None:
        share = fair.open_share(shares, tenant, plan, upper, cost, now)
    slot = admission.slot_of(upper, now, app.limits, cost)
    first = app.limits[0]
    pace, units = quota.refill_rate(upper.buckets[first.name]), cost.get(first.name, 0.0)
    if units > 0 and pace > 0:  # in the order granted (the module's docstring)
        slot = max(slot, upper.paced_until - max(0.0, first.burst - units) / pace)
    return Level(upper, app, cost, slot, share)


def report(
    state: KeyState, upper: KeyState, now: float, plan: Plan, report: Report
) -> ReportResult:
    """Apply a success or backoff to both levels (``report``'s level for a backoff, see the
    module's docstring); a failure changes neither's rates. Answers with the key's rates, the
    latest cooldown of the two, and whether it holds the call past ``max_backoff``."""
    app = plan.app
    assert app is not None
    aimd.sync_buckets(upper, now, app.limits)
    held = max(state.cooldown_until, upper.cooldown_until)
    if report.kind == SUCCESS:
        result = aimd.on_success(state, now, plan)
        aimd.on_success(upper, now, app)
    elif report.kind == BACKOFF:
        which = level_of(report, plan)
        if which == APP:
            aimd.sync_buckets(state, now, plan.limits)
            rate = state.buckets[plan.limits[0].name].rate
            result = ReportResult(state.epoch, False, rate, rate, 0.0)
        else:
            result = aimd.on_backoff(state, now, plan, report)
        if which != TENANT:
            up = aimd.on_backoff(upper, now, app, report._replace(epoch=report.app_epoch))
            result = dataclasses.replace(result, decreased=result.decreased or up.decreased)
    else:
        result = aimd.on_failure(state, now, plan.limits)
    cooldown_until = max(state.cooldown_until, upper.cooldown_until)
    left = max(0.0, cooldown_until - now)
    exhausted = cooldown_until > held and left > plan.max_backoff
    return dataclasses.replace(result, cooldown_left=left, exhausted=exhausted)
