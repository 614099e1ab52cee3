"""Old names kept for one release: each still works and warns, and its new name does not."""

from __future__ import annotations

import warnings

import pytest

import queue_ratelimit
from queue_ratelimit import ConfigError, Limiter, RateLimited, RateLimitInfo, TaskLimits
from queue_ratelimit.outcome import Outcome
from queue_ratelimit.policy.state import ReportResult


def test_the_task_names_still_work_and_warn() -> None:
    from queue_ratelimit.integrations import dramatiq as qrl_dramatiq
    from queue_ratelimit.integrations import rq as qrl_rq

    with pytest.warns(DeprecationWarning, match="requeue_after"):
        assert isinstance(qrl_dramatiq.rate_limited(2.0), RateLimited)
    with pytest.warns(DeprecationWarning, match="TaskLimits"):  # the old argument order
        limits = qrl_rq.JobLimits("github", None, 3, 2.5)
    assert limits == TaskLimits("github", requeue_budget=3, max_wait=2.5)
    env = {"QUEUE_RATELIMIT_REDIS_URL": "redis://127.0.0.1:1/0"}  # built, never connected
    with pytest.warns(DeprecationWarning, match="limiter_for"):
        assert isinstance(qrl_rq.limiter_from_env(env), Limiter)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(qrl_rq.limiter_for(env), Limiter)  # the new name does not warn


def test_the_response_names_still_work_and_warn() -> None:
    from queue_ratelimit.policy import signals_http

    with pytest.warns(DeprecationWarning, match="RateLimitInfo"):
        assert queue_ratelimit.RateLimitSignal is RateLimitInfo
    with pytest.warns(DeprecationWarning, match="RateLimitInfo"):
        assert signals_http.RateLimitSignal is RateLimitInfo
    outcome = Outcome("backoff", RateLimitInfo(backoff=True), ReportResult(0, False, 1, 1, 0))
    with pytest.warns(DeprecationWarning, match="Outcome.info"):
        assert outcome.signal is outcome.info
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert outcome.info.backoff


def test_a_backend_of_the_old_protocol_fails_at_construction() -> None:
    class OldBackend:
        def report_success(self, *args: object, **kwargs: object) -> None: ...

    with pytest.raises(ConfigError) as caught:
        Limiter(OldBackend())  # type: ignore[arg-type]
    assert caught.value.field == "backend" and "report(report, plan)" in str(caught.value)


def test_the_celery_alias_outside_its_run_reports_and_requeues_as_before() -> None:
    from celery import Celery

    from queue_ratelimit import MemoryBackend
    from queue_ratelimit.context import Backoff
    from queue_ratelimit.integrations.celery import RateLimitedTask, configure

    app = Celery("old-alias")
    limiter = Limiter(MemoryBackend())
    configure(app, limiter)

    @app.task(base=RateLimitedTask, integration="github", bind=True, shared=False)
    def sync(self: RateLimitedTask) -> BaseException:
        with pytest.warns(DeprecationWarning):
            return self.rate_limited(5.0)

    exc = sync.apply().get()  # eager: not through the runner
    assert isinstance(exc, Backoff) and exc.exc.integration == "github"
    assert limiter.snapshot("github").cooldown_left > 0  # reported, as the old method did
