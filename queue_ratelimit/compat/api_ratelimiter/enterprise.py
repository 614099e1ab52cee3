"""``EnterpriseClient``: the client with a circuit breaker, one log line and one metrics event
per request, as ``api_ratelimiter``'s; the breaker is this project's (shared with every
process on the same backend)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from queue_ratelimit.backends.base import Backend
from queue_ratelimit.compat.api_ratelimiter.api_rate_config import ApiRateConfig
from queue_ratelimit.compat.api_ratelimiter.clients import DynamicAPIClient, base_url_of
from queue_ratelimit.compat.api_ratelimiter.dynamic_ratelimiter import (
    CircuitOpenError,
    DynamicRateLimiter,
)
from queue_ratelimit.registry import get_integration

__all__ = ["CircuitBreakerConfig", "CircuitOpenError", "EnterpriseClient"]

log = logging.getLogger("queue_ratelimit.compat")


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """Open after ``failure_threshold`` failures in a row (5xx or no answer); probe after
    ``open_interval`` seconds."""

    failure_threshold: int = 5
    open_interval: float = 60.0


class EnterpriseClient:
    """A rate-limited client for one integration and tenant, with a breaker, logs and metrics.

    Each ``request`` acquires (``CircuitOpenError`` at once while the breaker is open), sends,
    retries a backoff like ``DynamicAPIClient``, and reports every answer to the breaker: a
    5xx or a transport error counts a failure. It logs one line and calls
    ``metrics_handler`` with one dict per request: ``integration``, ``tenant_id``,
    ``method``, ``path``, ``status_code`` (None without an answer), ``elapsed_ms``,
    ``attempts``, ``limiter`` (the limiter's snapshot), ``context`` (what you passed) and
    ``error`` (the exception's type and message, or None). No header, token or body is in
    either.
    """

    def __init__(
        self,
        integration: str,
        tenant_id: str | None = None,
        base_url: str | None = None,
        rate_config: ApiRateConfig | None = None,
        circuit_breaker_config: CircuitBreakerConfig | None = None,
        metrics_handler: Callable[[dict[str, Any]], None] | None = None,
        *,
        logger: logging.Logger | None = None,
        backend: Backend | None = None,
        max_retries_on_backoff: int = 3,
        session: requests.Session | None = None,
    ) -> None:
        breaker = circuit_breaker_config or CircuitBreakerConfig()
        more = {
            "breaker_failure_threshold": breaker.failure_threshold,
            "breaker_open_seconds": breaker.open_interval,
        }
        if rate_config is not None:
            config = dataclasses.replace(rate_config, name=integration).to_integration(**more)
        else:
            config = get_integration(integration).replace(**more)
        url = base_url or base_url_of(integration)
        if url is None:
            raise ValueError(f"{integration}: no known base URL; pass base_url=")
        self.integration = integration
        self.tenant_id = tenant_id
        self.limiter = DynamicRateLimiter(config=config, backend=backend, tenant=tenant_id)
        self.client = _ReportingClient(
            url,
            self.limiter,
            config.backoff_status_codes,
            max_retries_on_backoff=max_retries_on_backoff,
            session=session,
        )
        self.metrics_handler = metrics_handler
        self.log = logger or log

    def request(
        self, method: str, path: str, *, context: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> requests.Response:
        """Send one request (see the class); ``context`` is passed on to the metrics event."""
        started = time.monotonic()
        response: requests.Response | None = None
        error: BaseException | None = None
        try:
            response = self.client.request(method, path, **kwargs)
            return response
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._observe(method, path, started, response, error, context)

    def _observe(
        self,
        method: str,
        path: str,
        started: float,
        response: requests.Response | None,
        error: BaseException | None,
        context: Mapping[str, Any] | None,
    ) -> None:
        elapsed_ms = (time.monotonic() - started) * 1000.0
        status = response.status_code if response is not None else None
        event = {
            "integration": self.integration,
            "tenant_id": self.tenant_id,
            "method": method,
            "path": path.split("?", 1)[0],  # a query string may carry a secret
            "status_code": status,
            "elapsed_ms": elapsed_ms,
            "attempts": self.client.attempts,
            "limiter": self.limiter.snapshot(),
            "context": dict(context or {}),
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }
        level = logging.INFO if error is None else logging.WARNING
        self.log.log(
            level,
            "%s %s %s -> %s in %.0f ms",
            self.integration,
            method,
            event["path"],
            status if error is None else type(error).__name__,
            elapsed_ms,
        )
        if self.metrics_handler is not None:
            try:
                self.metrics_handler(event)
            except Exception:  # a metrics handler must never fail the request
                self.log.exception("%s: metrics_handler failed", self.integration)

    def close(self) -> None:
        """Close the session."""
        self.client.close()


class _ReportingClient(DynamicAPIClient):
    """``DynamicAPIClient`` that reports every answer (and a transport error) to the
    limiter's breaker, and counts its attempts."""

    attempts = 0

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        self.attempts = 0
        return super().request(method, path, **kwargs)

    def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.attempts += 1
        try:
            return super().send(method, url, **kwargs)
        except requests.RequestException:
            self.limiter.report(None)  # no answer: a failure for the breaker
            raise

    def answered(self, status: int) -> None:
        if status >= 500:
            self.limiter.report(status)  # a failure for the breaker
        else:
            self.limiter.on_success()
