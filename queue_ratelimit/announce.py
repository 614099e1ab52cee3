"""The signals a limiter sends for its decisions and reports (``queue_ratelimit.signals``):
what a ``Limiter`` and an ``AsyncLimiter`` announce alike, with the sync limiter as sender."""

from __future__ import annotations

import time

from queue_ratelimit import signals
from queue_ratelimit.plans import Cost
from queue_ratelimit.policy.state import BACKOFF, AcquireRequest, Decision, Report, ReportResult

__all__ = ["announce_decision", "announce_report"]


def announce_decision(
    sender: object, request: AcquireRequest, decision: Decision, cost: Cost
) -> None:
    """Emit the signals of one acquire's decision."""
    integration, tenant = request.integration, request.tenant
    if decision.granted:
        if decision.reason == "redeemed":
            signals.emit(
                signals.reservation_redeemed,
                sender,
                integration=integration,
                tenant=tenant,
                wait=decision.wait,
            )
        if signals.acquired.receivers:  # else emit's fields are built for nobody
            signals.emit(
                signals.acquired,
                sender,
                integration=integration,
                tenant=tenant,
                wait=decision.wait,
                cost=cost,
                reason=decision.reason,
                slot=decision.now + decision.wait,
            )
    else:
        signals.emit(
            signals.throttled,
            sender,
            integration=integration,
            tenant=tenant,
            wait=decision.wait,
            reason=decision.reason,
            reserved=decision.reservation is not None,
        )


def announce_report(sender: object, report: Report, result: ReportResult) -> None:
    """Announce what an applied report changed: a backoff, an exhausted quota, the rate
    moved, the breaker moved."""
    integration, tenant = report.integration, report.tenant
    if report.kind == BACKOFF:
        signals.emit(
            signals.backoff,
            sender,
            integration=integration,
            tenant=tenant,
            retry_after=report.retry_after,
            decreased=result.decreased,
            cooldown_left=result.cooldown_left,
        )
    if result.exhausted:
        signals.emit(
            signals.quota_exhausted,
            sender,
            integration=integration,
            tenant=tenant,
            retry_after=report.retry_after,
            until=time.time() + result.cooldown_left,
        )
    if result.new_rate != result.old_rate:
        signals.emit(
            signals.rate_changed,
            sender,
            integration=integration,
            tenant=tenant,
            old_rate=result.old_rate,
            new_rate=result.new_rate,
        )
    if result.breaker_changed and result.breaker in ("open", "closed"):
        event = signals.breaker_opened if result.breaker == "open" else signals.breaker_closed
        signals.emit(event, sender, integration=integration, tenant=tenant, forced=False)
