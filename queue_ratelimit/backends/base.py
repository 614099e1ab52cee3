"""The contract every limiter backend fulfils (``MemoryBackend``, ``RedisBackend``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from queue_ratelimit.policy.state import (
    Decision,
    Feedback,
    LimitParams,
    ReportResult,
    Reservation,
    Snapshot,
)


class Backend(Protocol):
    """Stores limiter keys and applies ``policy.aimd``'s rules to them atomically.

    A key is an integration and an optional tenant. ``limits`` always starts with the
    ``requests`` limit. Every method is one atomic step (one round trip for Redis). Reports
    apply their ``Feedback`` (published quotas, cost corrections) first.
    """

    def acquire(
        self,
        integration: str,
        tenant: str | None,
        limits: Sequence[LimitParams],
        costs: Mapping[str, float],
        *,
        max_wait: float,
        reserve: bool,
        reservation: Reservation | None,
        max_concurrent: int | None,
        lease_id: str | None,
        lease_ttl: float,
        breaker_open_seconds: float,
    ) -> Decision:
        """Decide an acquire (or a redemption) and record it; an open breaker grants nothing."""
        ...

    def report_success(
        self,
        integration: str,
        tenant: str | None,
        limits: Sequence[LimitParams],
        *,
        lease_id: str | None,
        feedback: Feedback,
    ) -> ReportResult:
        """Record a success: additive increase; give the lease back."""
        ...

    def report_backoff(
        self,
        integration: str,
        tenant: str | None,
        limits: Sequence[LimitParams],
        *,
        lease_id: str | None,
        feedback: Feedback,
        epoch: int | None,
        retry_after: float | None,
        cooldown_multiplier: float,
        max_backoff: float,
    ) -> ReportResult:
        """Record a backoff signal: decrease once per congestion event, open a cooldown."""
        ...

    def report_failure(
        self,
        integration: str,
        tenant: str | None,
        limits: Sequence[LimitParams],
        *,
        lease_id: str | None,
        feedback: Feedback,
        breaker_threshold: int,
        breaker_open_seconds: float,
    ) -> ReportResult:
        """Record a failed call (5xx, timeout): the integration's breaker counts it."""
        ...

    def release(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """Give a concurrency lease back without reporting an outcome."""
        ...

    def snapshot(
        self, integration: str, tenant: str | None, limits: Sequence[LimitParams]
    ) -> Snapshot:
        """Describe a key without changing it."""
        ...

    def reset(self, integration: str, tenant: str | None) -> None:
        """Forget a key's state (rates, debts, cooldown, leases)."""
        ...

    def set_breaker(self, integration: str, state: str, open_seconds: float) -> None:
        """Force the integration's breaker ``open`` (for ``open_seconds``) or ``closed``."""
        ...
