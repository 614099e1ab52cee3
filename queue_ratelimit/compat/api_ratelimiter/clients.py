"""``DynamicAPIClient``: a ``requests`` client with a base URL that acquires before each call
and waits out a backoff, retrying, as ``api_ratelimiter``'s did."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests

from queue_ratelimit.backends.base import Backend
from queue_ratelimit.compat.api_ratelimiter.api_rate_config import ApiRateConfig
from queue_ratelimit.compat.api_ratelimiter.dynamic_ratelimiter import DynamicRateLimiter
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.policy.signals_http import parse_rate_limit
from queue_ratelimit.registry import BUILTIN_HOSTS, get_integration

__all__ = [
    "BASE_URLS",
    "DynamicAPIClient",
    "base_url_of",
    "make_client_for",
    "make_client_from_config",
]

BASE_PATHS = {"slack": "/api"}
"""Where an API's paths start below its host, when not at the root."""

BASE_URLS: dict[str, str] = {}
"""Base URLs by integration that win over the built-in hosts (a proxy, a sandbox, a test)."""


class DynamicAPIClient:
    """Calls ``base_url``: ``limiter.acquire()`` before each request; an answer whose status is
    in ``backoff_status_codes`` is reported (``on_429`` with its ``Retry-After``) and the
    request retried after the cooldown, up to ``max_retries_on_backoff`` times, then
    ``RuntimeError``; any other answer is reported a success and returned.

    A server error (5xx) outside ``backoff_status_codes`` is returned without being counted
    a success. ``path`` may also be an absolute URL. Transport errors are raised as
    ``requests`` raises them. Always pass a ``timeout``.
    """

    def __init__(
        self,
        base_url: str,
        limiter: DynamicRateLimiter,
        backoff_status_codes: Iterable[int] = (429, 503),
        *,
        max_retries_on_backoff: int = 3,
        session: requests.Session | None = None,
    ) -> None:
        if max_retries_on_backoff < 0:
            raise ValueError("max_retries_on_backoff must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.backoff_status_codes = frozenset(backoff_status_codes)
        self.max_retries_on_backoff = max_retries_on_backoff
        self.session = session or requests.Session()

    def url_for(self, path: str) -> str:
        """``base_url`` joined with ``path`` (an absolute URL is kept as it is)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Acquire, send, report; retry a backoff after its cooldown (see the class)."""
        url = self.url_for(path)
        for attempt in range(self.max_retries_on_backoff + 1):
            self.limiter.acquire()
            response = self.send(method, url, **kwargs)
            if response.status_code not in self.backoff_status_codes:
                self.answered(response.status_code)
                return response
            info = parse_rate_limit(
                response.status_code,
                response.headers,
                response.content,
                backoff_status_codes=self.backoff_status_codes,
                max_backoff=self.limiter.config.max_quota_wait,
            )
            self.limiter.on_429(info.retry_after)  # the next acquire() waits it out
            if attempt == self.max_retries_on_backoff:
                response.close()
                raise RuntimeError(
                    f"{self.limiter.name}: {method} {path} still answered "
                    f"{response.status_code} after {attempt} retries"
                )
            response.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One attempt on the wire."""
        return self.session.request(method, url, **kwargs)

    def answered(self, status: int) -> None:
        """An answer that is no backoff: a success, unless a server error (not reported)."""
        if status < 500:
            self.limiter.on_success()

    def close(self) -> None:
        """Close the session."""
        self.session.close()


def base_url_of(name: str) -> str | None:
    """``BASE_URLS[name]``, else the built-in API's (``https://<its host><base path>``),
    when it has one."""
    if name in BASE_URLS:
        return BASE_URLS[name]
    host = next((h for h, n in BUILTIN_HOSTS.items() if n == name), None)
    return None if host is None else f"https://{host}{BASE_PATHS.get(name, '')}"


def make_client_for(
    config: ApiRateConfig | IntegrationConfig,
    base_url: str | None = None,
    *,
    backend: Backend | None = None,
    tenant: str | None = None,
    max_retries_on_backoff: int = 3,
) -> DynamicAPIClient:
    """A client for one API's config; ``backend=RedisBackend(url)`` shares its limit."""
    if isinstance(config, ApiRateConfig):
        config = config.to_integration()
    url = base_url or base_url_of(config.name)
    if url is None:
        raise ValueError(f"{config.name}: no known base URL; pass base_url=")
    limiter = DynamicRateLimiter(config=config, backend=backend, tenant=tenant)
    return DynamicAPIClient(
        url,
        limiter,
        config.backoff_status_codes,
        max_retries_on_backoff=max_retries_on_backoff,
    )


def make_client_from_config(
    name: str,
    base_url: str | None = None,
    *,
    backend: Backend | None = None,
    tenant: str | None = None,
    max_retries_on_backoff: int = 3,
) -> DynamicAPIClient:
    """A client for the built-in (or loaded) integration ``name`` at its API's base URL."""
    return make_client_for(
        get_integration(name),
        base_url,
        backend=backend,
        tenant=tenant,
        max_retries_on_backoff=max_retries_on_backoff,
    )
