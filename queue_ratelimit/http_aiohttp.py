"""aiohttp: a client middleware that acquires before each request and reports after it.

aiohttp's own extension point for this is the client middleware (aiohttp 3.12 and later)::

    session = aiohttp.ClientSession(middlewares=(RateLimitMiddleware(limiter, "notion"),))

It does what the ``requests`` adapter and the ``httpx`` transports do (``queue_ratelimit.http``),
with the same options: the tenant as a name, a function of the request or ``BY_TOKEN`` (a
digest of the ``Authorization`` header: the token never reaches Redis, signals or logs),
``BY_HOST``, ``estimate``, ``raise_on_backoff``, and ``retries`` / ``retry_deadline`` outside a
task. The limiter's calls are awaited (``AsyncLimiter``: ``redis.asyncio`` and the same
script) and waits are ``asyncio.sleep``, so the event loop never blocks. A body is read for
the report only on a backoff status, or on a status the dialect reads when it states a small
uncompressed ``Content-Length``; it stays readable (``await response.read()`` returns it).
Needs the ``aiohttp`` extra.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from queue_ratelimit.async_limiter import AsyncLimiter
from queue_ratelimit.client_calls import ClientCalls, Retries, Tenant
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import Cost

__all__ = ["RateLimitMiddleware"]


class RateLimitMiddleware:
    """An aiohttp client middleware rate-limiting every request of its session.

    Args: as ``queue_ratelimit.http.RateLimitedAdapter`` (``limiter``, ``integration`` or
    ``BY_HOST``, ``tenant``, ``max_wait``, ``raise_on_backoff``, ``estimate``, ``retries``,
    ``retry_deadline``); ``usage`` is not offered, since an aiohttp body is read with an
    ``await``: a cost the answer states is read through the integration's dialect instead.
    """

    def __init__(
        self,
        limiter: Limiter | AsyncLimiter,
        integration: str,
        *,
        tenant: Tenant = None,
        max_wait: float | None = None,
        raise_on_backoff: bool = True,
        estimate: Callable[[Any], Cost] | None = None,
        retries: int = 0,
        retry_deadline: float | None = None,
    ) -> None:
        if not isinstance(limiter, AsyncLimiter):
            limiter = AsyncLimiter.sharing(limiter)
        self._gate = ClientCalls(
            limiter,
            integration,
            tenant,
            max_wait,
            raise_on_backoff,
            estimate,
            None,
            Retries(retries, retry_deadline),
        )

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Acquire, send, report; with ``retries``, wait out a ``RateLimited`` and try again."""
        return await self._gate.retries.arun(lambda: self._attempt(request, handler), asyncio.sleep)

    def _attempt(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> Awaitable[aiohttp.ClientResponse]:
        async def close(response: aiohttp.ClientResponse) -> None:
            response.release()

        return self._gate.aexchange(
            request,
            lambda: handler(request),
            aiohttp.ClientError,
            lambda response: response.status,
            lambda response: response.read(),
            close,
        )
