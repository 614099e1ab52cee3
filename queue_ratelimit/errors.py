"""The exceptions queue_ratelimit raises, all under one root.

::

    QueueRateLimitError
    ├── ConfigError (also ValueError)      invalid configuration, raised at startup
    ├── InvalidRequest (also ValueError)   a call the limiter can never satisfy (cost > burst)
    ├── BackendError                       the shared state (Redis) failed; chained from the cause
    └── RateLimited                        control flow: wait ``retry_after`` seconds, then retry
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
        self.integration = integration
        self.field = field
        self.value = value
        self.reason = reason
        where = f"integration {integration!r}: " if integration else ""
        super().__init__(f"{where}field {field!r} = {value!r}: {reason}")


class InvalidRequest(QueueRateLimitError, ValueError):
    """A limiter call that can never be satisfied (unknown limit, cost above the burst)."""


class BackendError(QueueRateLimitError):
    """The limiter's backend (Redis) failed; the original exception is the ``__cause__``."""


class RateLimited(QueueRateLimitError):
    """Raised to say "not now": the caller should retry after ``retry_after`` seconds.

    Attributes:
        retry_after: seconds from now until a retry may succeed.
        integration: the integration that is throttled.
        tenant: the tenant key, when the limit is per tenant.
    """

    def __init__(
        self, retry_after: float, integration: str = "", tenant: str | None = None
    ) -> None:
        self.retry_after = retry_after
        self.integration = integration
        self.tenant = tenant
        target = f"{integration}:{tenant}" if tenant else integration
        super().__init__(
            f"rate limited{' on ' + target if target else ''}; retry in {retry_after:.3f}s"
        )
