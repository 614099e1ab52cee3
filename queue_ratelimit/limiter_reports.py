"""The outcome reports a caller makes by hand (``on_success``, ``on_backoff``,
``on_failure``): each builds a ``Report`` for ``Limiter.report`` (``limiter.py``), which
applies it in one round trip; ``Limiter.report_response`` builds one from a response."""

from __future__ import annotations

from queue_ratelimit.policy.state import (
    BACKOFF,
    FAILURE,
    NO_FEEDBACK,
    SUCCESS,
    Feedback,
    Report,
    ReportResult,
)

__all__ = ["LimiterReports"]


class LimiterReports:
    """The outcome reports of ``Limiter`` (see the module)."""

    def report(self, report: Report) -> ReportResult:
        raise NotImplementedError  # (Limiter's)

    def on_success(
        self,
        integration: str,
        tenant: str | None = None,
        *,
        lease: str | None = None,
        feedback: Feedback = NO_FEEDBACK,
    ) -> ReportResult:
        """Report a successful call: additive increase; gives ``lease`` back.

        ``feedback`` carries what the response published (quotas) and the call's actual
        cost (see ``policy/quota.py``); it is applied in the same round trip.
        """
        return self.report(Report(SUCCESS, integration, tenant, lease, feedback))

    def on_backoff(
        self,
        integration: str,
        tenant: str | None = None,
        *,
        retry_after: float | None = None,
        epoch: int | None = None,
        lease: str | None = None,
        feedback: Feedback = NO_FEEDBACK,
        level: str | None = None,
        app_epoch: int | None = None,
    ) -> ReportResult:
        """Report a backoff signal (429, 503, ...): decrease once per congestion event.

        Args:
            retry_after: the upstream's ``Retry-After`` in seconds, when it sent one; the
                cooldown then lasts exactly that (clamped to ``[0, max_quota_wait]``; past
                ``max_backoff`` the key is exhausted until then, ``quota_exhausted``).
            epoch: ``decision.epoch`` of the acquire that led to this call; with it, backoffs
                from calls granted before the last decrease never decrease again.
            lease: the concurrency lease to give back.
            level: with an ``app_limit``, the level it lowers: ``"tenant"``, ``"app"`` or
                ``"both"`` (None: the config's ``app_backoffs``; see ``docs/limits.md``).
            app_epoch: with an ``app_limit``, ``decision.app_epoch`` of that acquire.
        """
        return self.report(
            Report(
                BACKOFF, integration, tenant, lease, feedback, epoch, retry_after, level, app_epoch
            )
        )

    def on_failure(
        self,
        integration: str,
        tenant: str | None = None,
        *,
        lease: str | None = None,
        feedback: Feedback = NO_FEEDBACK,
    ) -> ReportResult:
        """Report a failed call (5xx, timeout, connection error; not a 429, which is a
        backoff): after ``breaker_failure_threshold`` in a row the integration's breaker opens
        for every worker and tenant; gives ``lease`` back."""
        return self.report(Report(FAILURE, integration, tenant, lease, feedback))
