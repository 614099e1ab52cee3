"""Classifying answers and deriving feedback (quotas, cost corrections) from them."""

from __future__ import annotations

import pytest

from queue_ratelimit.outcome import BACKOFF, FAILURE, SUCCESS, classify, feedback_for
from queue_ratelimit.plans import plan_for
from queue_ratelimit.policy.signals_http import Quota, RateLimitInfo
from queue_ratelimit.registry import BUILTIN_INTEGRATIONS

OPENAI = plan_for(BUILTIN_INTEGRATIONS["openai"])


@pytest.mark.parametrize(
    ("status", "signal", "kind"),
    [
        (200, RateLimitInfo(), SUCCESS),
        (404, RateLimitInfo(), SUCCESS),
        (429, RateLimitInfo(backoff=True), BACKOFF),
        (503, RateLimitInfo(backoff=True), BACKOFF),
        (500, RateLimitInfo(), FAILURE),
        (None, RateLimitInfo(), FAILURE),
    ],
)
def test_classify(status: int | None, signal: RateLimitInfo, kind: str) -> None:
    assert classify(status, signal) == kind


def test_a_refusal_is_a_failure_unless_a_tenant_met_it() -> None:
    """A spent plan quota is the integration's breaker's to count; a tenant's spent key is
    that tenant's alone (the breaker is every tenant's): response_report says which."""
    refused = RateLimitInfo(backoff=True, refused="insufficient_quota")
    assert classify(429, refused) == FAILURE
    assert classify(429, refused, own_refusal=True) == SUCCESS


def test_the_headline_quota_feeds_the_requests_limit() -> None:
    signal = RateLimitInfo(limit=100, remaining=7, reset_after=12.0)
    assert feedback_for(OPENAI, signal, seq=4).quotas == {"requests": (7.0, 12.0)}
    assert feedback_for(OPENAI, signal, seq=4).seq == 4


def test_named_quotas_feed_limits_of_that_name_only() -> None:
    signal = RateLimitInfo(
        quotas={
            "requests": Quota(500, 499, 0.12),
            "tokens": Quota(30000, 29000, 2.0),
            "images": Quota(5, 0, 60.0),  # no such limit configured: ignored
        },
        limit=500,
        remaining=499,
        reset_after=0.12,
    )
    assert feedback_for(OPENAI, signal).quotas == {
        "requests": (499.0, 0.12),
        "tokens": (29000.0, 2.0),
    }


def test_quotas_without_a_reset_are_not_fed_forward() -> None:
    assert feedback_for(OPENAI, RateLimitInfo(remaining=3)).quotas == {}


def test_actual_usage_corrects_the_estimate() -> None:
    feedback = feedback_for(
        OPENAI,
        RateLimitInfo(),
        estimated={"requests": 1.0, "tokens": 500.0},
        actual={"tokens": 320.0, "unknown": 5.0},
    )
    assert feedback.adjust == {"tokens": -180.0}
