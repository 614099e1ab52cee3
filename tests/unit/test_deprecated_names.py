"""Old names kept for one release: each still works and warns, and its new name does not."""

from __future__ import annotations

import warnings

import pytest

import queue_ratelimit
from queue_ratelimit import Limiter, RateLimited, RateLimitInfo, TaskLimits
from queue_ratelimit.outcome import Outcome
from queue_ratelimit.policy.state import ReportResult


def test_the_task_names_still_work_and_warn() -> None:
    from queue_ratelimit.integrations import dramatiq as qrl_dramatiq
    from queue_ratelimit.integrations import rq as qrl_rq
    from queue_ratelimit.integrations.celery import RateLimitedTask

    with pytest.warns(DeprecationWarning, match="requeue_after"):
        assert isinstance(qrl_dramatiq.rate_limited(2.0), RateLimited)
    with pytest.warns(DeprecationWarning, match="requeue_after"):
        assert isinstance(RateLimitedTask().rate_limited(2.0), RateLimited)
    with pytest.warns(DeprecationWarning, match="TaskLimits"):
        assert qrl_rq.JobLimits is TaskLimits
    env = {"QUEUE_RATELIMIT_REDIS_URL": "redis://127.0.0.1:1/0"}  # built, never connected
    with pytest.warns(DeprecationWarning, match="limiter_for"):
        assert isinstance(qrl_rq.limiter_from_env(env), Limiter)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(qrl_rq.limiter_for(env), Limiter)  # the new name does not warn


def test_the_response_names_still_work_and_warn() -> None:
    from queue_ratelimit.policy import signals_http

    with pytest.warns(DeprecationWarning, match="RateLimitInfo"):
        assert queue_ratelimit.RateLimitSignal is RateLimitInfo  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match="RateLimitInfo"):
        assert signals_http.RateLimitSignal is RateLimitInfo  # type: ignore[attr-defined]
    outcome = Outcome("backoff", RateLimitInfo(backoff=True), ReportResult(0, False, 1, 1, 0))
    with pytest.warns(DeprecationWarning, match="Outcome.info"):
        assert outcome.signal is outcome.info
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert outcome.info.backoff
