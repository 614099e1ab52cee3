"""From a response to a report: classify it and derive the feedback the limiter applies.

Pure functions: ``Limiter.report_response`` parses the response with
``parse_rate_limit``, calls :func:`classify` and :func:`feedback_for`, and sends the result
in one round trip.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from queue_ratelimit.config import PRIMARY_LIMIT
from queue_ratelimit.plans import Prepared
from queue_ratelimit.policy.signals_http import Quota, RateLimitInfo, parse_rate_limit
from queue_ratelimit.policy.state import (
    BACKOFF,
    FAILURE,
    SUCCESS,
    Decision,
    Feedback,
    Plan,
    Report,
    ReportResult,
)


def classify(status: int | None, info: RateLimitInfo, own_refusal: bool = False) -> str:
    """``backoff`` for a rate-limit answer, ``failure`` for a 5xx, no answer (``None``: a
    timeout or connection error) or a refusal (``info.refused``: a spent credit or plan
    quota, which the breaker counts: repeated, it pauses the integration), else
    ``success``: any other answer, 4xx included, shows the upstream accepted the call's
    rate. ``own_refusal``: a refusal spends the calling tenant's own account or key, not
    the whole application's quota; it is a success then, as the breaker is every tenant's
    (the HTTP clients still raise ``QuotaSpent``)."""
    if info.refused:
        return SUCCESS if own_refusal else FAILURE
    if info.backoff:
        return BACKOFF
    if status is None or status >= 500:
        return FAILURE
    return SUCCESS


def feedback_for(
    plan: Plan,
    info: RateLimitInfo,
    *,
    seq: int | None = None,
    estimated: Mapping[str, float] | None = None,
    actual: Mapping[str, float] | None = None,
) -> Feedback:
    """The quotas the response published for the plan's limits, and the cost corrections.

    The headline quota (``info.remaining``/``reset_after``) counts as ``requests`` unless
    the response named a ``requests`` quota. ``actual`` minus ``estimated`` (per limit) is
    charged; a limit missing from ``estimated`` was estimated at 0.
    """
    names = {lim.name for lim in plan.limits}
    published = dict(info.quotas)
    if PRIMARY_LIMIT not in published and info.remaining is not None:
        published[PRIMARY_LIMIT] = Quota(info.limit, info.remaining, info.reset_after)
    quotas = {
        name: (float(quota.remaining), quota.reset_after)
        for name, quota in published.items()
        if name in names and quota.remaining is not None and quota.reset_after
    }
    adjust: dict[str, float] = {}
    if actual:
        spent = estimated or {}
        adjust = {
            name: units - spent.get(name, 0.0)
            for name, units in actual.items()
            if name in names and units != spent.get(name, 0.0)
        }
    return Feedback(quotas=quotas, adjust=adjust, seq=seq)


@dataclass(frozen=True)
class Outcome:
    """What ``Limiter.report_response`` learned and did.

    Attributes:
        kind: ``success``, ``backoff`` or ``failure``.
        info: what the response said about rate limits (``parse_rate_limit``).
        result: the limiter's report result (rates, cooldown, breaker).
    """

    kind: str
    info: RateLimitInfo
    result: ReportResult

    @property
    def signal(self) -> RateLimitInfo:
        """Deprecated: ``info``."""
        warnings.warn(
            "Outcome.signal is deprecated: use Outcome.info", DeprecationWarning, stacklevel=2
        )
        return self.info

    @property
    def retry_after(self) -> float:
        """Seconds to wait before retrying: the upstream's ``Retry-After``, else the cooldown
        the limiter opened (or the breaker's open interval is the caller's to look up)."""
        if self.info.retry_after is not None:
            return self.info.retry_after
        return self.result.cooldown_left


def response_report(
    prepared: Prepared,
    integration: str,
    tenant: str | None,
    status: int | None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | str | Mapping[str, object] | None,
    decision: Decision | None,
    estimated: Mapping[str, float] | None,
    actual: Mapping[str, float] | None,
) -> tuple[Report, RateLimitInfo]:
    """What ``Limiter.report_response`` reports of an answer (read with the integration's
    config), and what the answer stated."""
    config = prepared.config
    info = parse_rate_limit(
        status or 0,
        headers,
        body,
        backoff_status_codes=config.backoff_status_codes,
        max_backoff=config.max_quota_wait,  # the true stated wait: the limiter clamps it
        dialect=config.dialect,
    )
    own = tenant is not None and info.refused not in config.dialect.app_refusals
    kind = classify(status, info, own_refusal=own)
    if actual is None and estimated is not None and info.costs:
        # the answer stated what the estimated call really cost: believed up to the
        # limit's burst (one answer cannot claim more; ``actual`` given here is the
        # caller's own count, charged in full)
        bursts = prepared.bursts
        actual = {name: min(units, bursts.get(name, units)) for name, units in info.costs.items()}
    feedback = feedback_for(
        prepared.plan,
        info,
        seq=decision.seq if decision else None,
        estimated=estimated,
        actual=actual,
    )
    epoch = decision.epoch if decision and kind == BACKOFF else None
    lease = decision.lease if decision else None
    retry_after = info.retry_after if kind == BACKOFF else None
    app_epoch = decision.app_epoch if decision and kind == BACKOFF else None
    report = Report(kind, integration, tenant, lease, feedback, epoch, retry_after, None, app_epoch)
    return report, info
