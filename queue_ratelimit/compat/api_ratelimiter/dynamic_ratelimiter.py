"""``DynamicRateLimiter``: the ``api_ratelimiter`` limiter's interface on this project's.

It blocks in ``acquire()`` until a token is free, as it did; ``on_success()`` and
``on_429()`` report. By default its state lives in this process (``MemoryBackend``); pass
``backend=RedisBackend(url)`` and every process using that Redis shares one limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from queue_ratelimit.backends.base import Backend
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.compat.api_ratelimiter.api_rate_config import ApiRateConfig
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import QueueRateLimitError
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.outcome import Outcome

__all__ = ["CircuitOpenError", "DynamicRateLimiter"]

_FOREVER = 10.0**9  # seconds: acquire() blocks as long as it takes, as it always did
BREAKER_OPEN = "breaker_open"


class CircuitOpenError(QueueRateLimitError):
    """The integration's circuit breaker is open: no call is made until ``retry_after``
    seconds have passed (then one probe call goes, and its outcome closes or reopens it)."""

    def __init__(self, integration: str, retry_after: float) -> None:
        super().__init__(f"{integration}: circuit open, next probe in {retry_after:.1f} s")
        self.integration = integration
        self.retry_after = retry_after


class DynamicRateLimiter:
    """An AIMD token bucket with the ``api_ratelimiter`` interface.

    Args:
        rate_limit_per_sec, burst_size, increase_factor, decrease_factor, min_rate,
            max_rate, cooldown_multiplier: as before (validated: a bad value raises
            ``ConfigError`` naming the field).
        name: the limit's name; limiters with the same name on one shared backend share it.
        tenant: a tenant of the limit (one bucket per tenant under the same settings).
        backend: where the state lives: this process (default) or a ``RedisBackend``.
        config: an ``IntegrationConfig`` to use as it is, instead of the fields above.
        sleep: how ``acquire`` sleeps (inject one in tests).
    """

    def __init__(
        self,
        rate_limit_per_sec: float = 1.0,
        burst_size: float = 1.0,
        increase_factor: float = 0.1,
        decrease_factor: float = 0.5,
        min_rate: float = 0.1,
        max_rate: float = 10.0,
        cooldown_multiplier: float = 2.0,
        *,
        name: str = "default",
        tenant: str | None = None,
        backend: Backend | None = None,
        config: IntegrationConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if config is None:  # AIMD from the start rate, as before (no start phase)
            config = ApiRateConfig(
                name,
                rate_limit_per_sec,
                burst_size,
                increase_factor,
                decrease_factor,
                min_rate,
                max_rate,
                cooldown_multiplier,
            ).to_integration()
        self.name = config.name
        self.tenant = tenant
        self.limiter = Limiter(backend or MemoryBackend(), {config.name: config}, sleep=sleep)
        self._sleep = sleep

    @property
    def config(self) -> IntegrationConfig:
        """The validated settings."""
        return self.limiter.config(self.name)

    def acquire(self, timeout: float | None = None) -> None:
        """Block until a token is free (through any cooldown), then take it.

        Raises:
            CircuitOpenError: the breaker is open (``EnterpriseClient`` reports failures).
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            decision = self.limiter.acquire(
                self.name, self.tenant, max_wait=_FOREVER, cooldown_wait=_FOREVER, reserve=False
            )
            if decision.reason == BREAKER_OPEN:
                raise CircuitOpenError(self.name, decision.wait)
            wait = decision.wait
            if deadline is not None and time.monotonic() + wait > deadline:
                raise TimeoutError(f"{self.name}: no token within {timeout} s")
            if decision.granted:
                if wait > 0:
                    self._sleep(wait)
                return
            self._sleep(max(wait, 0.001))  # a probe's turn: ask again

    def on_success(self) -> None:
        """A call succeeded: the rate climbs by ``increase_factor``."""
        self.limiter.on_success(self.name, self.tenant)

    def on_429(self, retry_after: float | None = None) -> None:
        """A call was told to back off: the rate falls by ``decrease_factor`` (once per
        congestion event), and a cooldown of ``retry_after`` (else ``cooldown_multiplier``
        intervals) holds the next ``acquire``."""
        self.limiter.on_backoff(self.name, self.tenant, retry_after=retry_after)

    on_backoff = on_429

    def report(self, status: int | None, headers: Any = (), body: Any = None) -> Outcome:
        """Report an answer (``status=None``: none came) through this project's parser: a
        backoff, a failure (counted by the breaker) or a success, with any quota it states."""
        return self.limiter.report_response(self.name, self.tenant, status, headers, body)

    def snapshot(self) -> dict[str, Any]:
        """The current state: ``rate``, ``tokens``, ``cooldown_remaining``, the bounds."""
        state = self.limiter.snapshot(self.name, self.tenant)
        limit, config = state.limit(), self.config
        return {
            "name": self.name,
            "tenant": self.tenant,
            "rate": limit.rate,
            "tokens": limit.tokens,
            "cooldown_remaining": state.cooldown_left,
            "min_rate": config.min_rate,
            "max_rate": config.max_rate,
        }
