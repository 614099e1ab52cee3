"""The exceptions queue_ratelimit raises, all under one root.

::

    QueueRateLimitError
    ├── ConfigError (also ValueError)      invalid configuration, raised at startup
    ├── InvalidRequest (also ValueError)   a call the limiter can never satisfy (cost > burst)
    ├── BackendError                       the shared state (Redis) failed; chained from the cause
    │   └── BackendUnavailable             ... and the integration fails closed: retry later
    ├── RateLimited                        control flow: wait ``retry_after`` seconds, then retry
    ├── QuotaSpent                         the upstream refused: credit or plan quota spent
    └── RequeueBudgetExhausted             a task was requeued ``requeue_budget`` times: it fails
"""

from __future__ import annotations


class QueueRateLimitError(Exception):
    """Root of every exception this library raises."""


class ConfigError(QueueRateLimitError, ValueError):
    """A configuration value is invalid.

    Attributes:
        integration: the integration whose configuration is wrong (``None`` when global).
        field: the offending field.
        value: the offending value, as given.
    """

    def __init__(self, integration: str | None, field: str, value: object, reason: str) -> None:
        super().__init__(integration, field, value, reason)  # args rebuild it (pickle)
        self.integration = integration
        self.field = field
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        where = f"integration {self.integration!r}: " if self.integration else ""
        return f"{where}field {self.field!r} = {self.value!r}: {self.reason}"


class InvalidRequest(QueueRateLimitError, ValueError):
    """A limiter call that can never be satisfied (unknown limit, cost above the burst)."""


class BackendError(QueueRateLimitError):
    """The limiter's backend (Redis) failed; the original exception is the ``__cause__``."""


class BackendUnavailable(BackendError):
    """The shared state is unreachable and the integration fails closed
    (``on_backend_error="closed"``): nothing was granted; try again after ``retry_after``.

    Task integrations turn it into a requeue, never a failure.
    """

    def __init__(self, message: str = "backend unavailable", retry_after: float = 5.0) -> None:
        super().__init__(message, retry_after)  # args rebuild it (result backends)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.args[0]}; retry in {float(self.retry_after):.3f}s"


BACKEND_UNAVAILABLE = "backend_unavailable"
"""``RateLimited.reason`` when the limiter's Redis did not answer."""

CONTENTION = "contention"
"""``RateLimited.reason`` when the upstream said one object the call touches is busy, not
the API's rate (a dialect's ``contention_codes``: Stripe's ``lock_timeout``)."""

CONTENTION_WAIT = 1.0
"""Seconds a call that met contention waits before it is tried again, when the answer
states no wait (a task requeued for it adds its jitter)."""


class RateLimited(QueueRateLimitError):
    """Raised to say "not now": the caller should retry after ``retry_after`` seconds.

    Attributes:
        retry_after: seconds from now until a retry may succeed.
        integration: the integration that is throttled.
        tenant: the tenant key, when the limit is per tenant.
        reason: ``"backoff"`` (the upstream or the limiter said wait), or
            ``"backend_unavailable"`` (the limiter's Redis did not answer; a task requeued
            for it spends none of its requeue budget), or ``"contention"`` (one object the
            call touched was busy, not the API: the rate was not cut).
    """

    def __init__(
        self,
        retry_after: float = 0.0,
        integration: str = "",
        tenant: str | None = None,
        reason: str = "backoff",
    ) -> None:
        super().__init__(retry_after, integration, tenant, reason)  # args rebuild it (pickle)
        self.retry_after = retry_after
        self.integration = integration
        self.tenant = tenant
        self.reason = reason

    def __str__(self) -> str:
        target = f"{self.integration}:{self.tenant}" if self.tenant else self.integration
        where = f" on {target}" if target else ""
        return f"rate limited{where}; retry in {float(self.retry_after):.3f}s"


class QuotaSpent(QueueRateLimitError):
    """The upstream refused the call for a reason no wait mends: the account's credit or
    plan quota is spent (OpenAI's ``429 insufficient_quota``; the dialect's
    ``refusal_codes``). Raised by the HTTP clients instead of retrying; the limiter counts the
    answer as a failure (repeated, the breaker pauses the integration) and does not cut the
    rate. A task fails through the framework's own failure path, visibly.

    Attributes:
        integration: the integration that refused.
        code: the refusal code the answer stated.
        status: the answer's HTTP status.
    """

    def __init__(self, integration: str = "", code: str = "", status: int = 0) -> None:
        super().__init__(integration, code, status)  # args rebuild it (result backends)
        self.integration = integration
        self.code = code
        self.status = status

    def __str__(self) -> str:
        return (
            f"{self.integration or 'the upstream'} refused the call: {self.code}"
            f" (HTTP {self.status}): its credit or plan quota is spent, and waiting will"
            " not mend it"
        )


class RequeueBudgetExhausted(QueueRateLimitError):
    """A task was put back on the broker ``requeue_budget`` times and still found no slot.

    It fails through the framework's own failure path (result backend, ``task_failure``,
    dead letters, the failed job registry), so nothing is dropped silently. Only a message
    is positional, so every framework can serialise and rebuild it.
    """

    def __init__(self, message: str = "requeue budget exhausted") -> None:
        super().__init__(message)
