"""Rate-limited HTTP: a ``requests`` adapter and ``httpx`` transports (sync and async).

Each request acquires from the limiter first (sleeping a short wait, at most ``max_wait``;
beyond it ``RateLimited`` is raised before anything is sent; inside a rate-limited task the
first call uses the slot the task acquired before it started), and each answer is reported:
its quotas feed the limiter, a backoff slows the fleet down and raises ``RateLimited``
carrying ``retry_after`` (or is returned, with ``raise_on_backoff=False``; inside a task the
integration's requeue hook takes it instead), a 5xx or a transport error counts toward the
breaker.

    session = requests.Session()
    session.mount("https://api.notion.com/", RateLimitedAdapter(limiter, "notion"))

    client = httpx.Client(transport=RateLimitedTransport(limiter, "notion"))
    client = httpx.AsyncClient(transport=AsyncRateLimitedTransport(limiter, "notion"))

The integration is fixed, or ``BY_HOST``: each request is limited under its host's
integration (zero configuration: see ``queue_ratelimit.hosts``). The tenant is a fixed
string, a function of the request, or ``BY_TOKEN``: a digest of the
``Authorization`` header, so each API token gets its own limit while the token itself never
reaches Redis, signals, logs or exceptions. Without one, a call made inside a rate-limited
task uses the task's tenant. Timeouts: the adapter applies
``DEFAULT_TIMEOUT`` (5 s to connect, 30 s to read) when a request sets none; httpx clients
keep their own (httpx's default is 5 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import httpx
import requests
from requests.adapters import HTTPAdapter

from queue_ratelimit.async_limiter import AsyncLimiter
from queue_ratelimit.client_calls import (
    BY_TOKEN,
    ClientCalls,
    Retries,
    Tenant,
    small,
    token_tenant,
)
from queue_ratelimit.hosts import BY_HOST
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import Cost

__all__ = [
    "BY_HOST",
    "BY_TOKEN",
    "DEFAULT_TIMEOUT",
    "AsyncRateLimitedTransport",
    "RateLimitedAdapter",
    "RateLimitedTransport",
    "token_tenant",
]

DEFAULT_TIMEOUT: Final = (5.0, 30.0)
"""(connect, read) seconds used by ``RateLimitedAdapter`` when a request sets no timeout."""


class RateLimitedAdapter(HTTPAdapter):
    """A ``requests`` transport adapter that rate-limits every request sent through it.

    Args:
        limiter: the shared limiter.
        integration: the integration whose limits apply; ``BY_HOST``: each request's host's
            (``queue_ratelimit.hosts``: a built-in for a known API host, else one made for
            the host on first use).
        tenant: a tenant name, a function of the ``PreparedRequest``, or ``BY_TOKEN``.
        max_wait: the longest wait slept before sending (default: the integration's).
        raise_on_backoff: raise ``RateLimited`` on a backoff answer (else return it).
        estimate: a function of the request giving its cost (``{"tokens": 1200}``).
        usage: a function of the response giving its actual cost, to correct the estimate.
        retries: outside a task, wait out a ``RateLimited`` (its ``retry_after``: the slot,
            or the upstream's ``Retry-After``) and try again, up to this many more times;
            inside a rate-limited task the task is requeued instead (``Retries``).
        retry_deadline: the seconds all attempts together may take; past it, raise.
        **kwargs: passed to ``HTTPAdapter`` (pool sizes, ``max_retries``).
    """

    def __init__(
        self,
        limiter: Limiter,
        integration: str,
        *,
        tenant: Tenant = None,
        max_wait: float | None = None,
        raise_on_backoff: bool = True,
        estimate: Callable[[Any], Cost] | None = None,
        usage: Callable[[Any], Mapping[str, float] | None] | None = None,
        retries: int = 0,
        retry_deadline: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._gate = ClientCalls(
            limiter,
            integration,
            tenant,
            max_wait,
            raise_on_backoff,
            estimate,
            usage,
            Retries(retries, retry_deadline),
        )

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Acquire, send, report; see the class docstring."""
        parent = super().send
        return self._gate.retries.run(
            lambda: self._gate.exchange(
                request,
                lambda: parent(
                    request, stream=stream, timeout=timeout or DEFAULT_TIMEOUT, **kwargs
                ),
                requests.RequestException,
                # a stream is read only when small; its content then stays for iter_content()
                lambda answer: answer.content if not stream or small(answer.headers) else None,
                requests.Response.close,
                whole=not stream,  # requests reads an unstreamed body whole anyway
            )
        )


class RateLimitedTransport(httpx.BaseTransport):
    """An ``httpx`` transport that rate-limits every request; wraps another transport.

    Args: as ``RateLimitedAdapter``, plus ``transport`` (default ``httpx.HTTPTransport()``).
    """

    def __init__(
        self,
        limiter: Limiter,
        integration: str,
        *,
        transport: httpx.BaseTransport | None = None,
        tenant: Tenant = None,
        max_wait: float | None = None,
        raise_on_backoff: bool = True,
        estimate: Callable[[Any], Cost] | None = None,
        usage: Callable[[Any], Mapping[str, float] | None] | None = None,
        retries: int = 0,
        retry_deadline: float | None = None,
    ) -> None:
        self._transport = transport or httpx.HTTPTransport()
        self._gate = ClientCalls(
            limiter,
            integration,
            tenant,
            max_wait,
            raise_on_backoff,
            estimate,
            usage,
            Retries(retries, retry_deadline),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Acquire, send, report; see the module docstring."""
        return self._gate.retries.run(
            lambda: self._gate.exchange(
                request,
                lambda: self._transport.handle_request(request),
                httpx.TransportError,
                httpx.Response.read,
                httpx.Response.close,
            )
        )

    def close(self) -> None:
        """Close the wrapped transport."""
        self._transport.close()


class AsyncRateLimitedTransport(httpx.AsyncBaseTransport):
    """The async twin of ``RateLimitedTransport``, on the async limiter: the backend's calls
    are awaited (``redis.asyncio``, the same script) and waits are ``asyncio.sleep``, so the
    event loop never blocks. Args: as ``RateLimitedTransport`` with an
    ``httpx.AsyncBaseTransport``; ``limiter`` may be a ``Limiter`` (an ``AsyncLimiter``
    sharing it is made) or an ``AsyncLimiter``. Runs on asyncio (not trio)."""

    def __init__(
        self,
        limiter: Limiter | AsyncLimiter,
        integration: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        tenant: Tenant = None,
        max_wait: float | None = None,
        raise_on_backoff: bool = True,
        estimate: Callable[[Any], Cost] | None = None,
        usage: Callable[[Any], Mapping[str, float] | None] | None = None,
        retries: int = 0,
        retry_deadline: float | None = None,
    ) -> None:
        if not isinstance(limiter, AsyncLimiter):
            limiter = AsyncLimiter.sharing(limiter)
        self._transport = transport or httpx.AsyncHTTPTransport()
        self._gate = ClientCalls(
            limiter,
            integration,
            tenant,
            max_wait,
            raise_on_backoff,
            estimate,
            usage,
            Retries(retries, retry_deadline),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Acquire, send, report; with ``retries``, wait out a ``RateLimited`` and try again
        (see ``Retries``)."""
        return await self._gate.retries.arun(lambda: self._attempt(request), asyncio.sleep)

    def _attempt(self, request: httpx.Request) -> Awaitable[httpx.Response]:
        return self._gate.aexchange(
            request,
            lambda: self._transport.handle_async_request(request),
            httpx.TransportError,
            lambda response: response.status_code,
            lambda response: response.aread(),
            lambda response: response.aclose(),
        )

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._transport.aclose()
