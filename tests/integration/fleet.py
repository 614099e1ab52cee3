"""Worker processes for the HTTP fleet tests (importable by spawned processes)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import requests

from queue_ratelimit import (
    BUILTIN_INTEGRATIONS,
    IntegrationConfig,
    LimitConfig,
    Limiter,
    RateLimited,
)
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.http import AsyncRateLimitedTransport, RateLimitedAdapter, RateLimitedTransport

API = IntegrationConfig(
    name="api",
    rate_limit_per_sec=20.0,
    burst_size=2.0,
    increase_factor=0.5,
    decrease_factor=0.5,
    min_rate=1.0,
    max_rate=1000.0,
    max_wait=5.0,
    max_backoff=10.0,
)


def _limiter(redis_url: str, prefix: str) -> Limiter:
    return Limiter(RedisBackend(redis_url, prefix=prefix), {"api": API})


def _retrying(call: Any, attempts: list[int]) -> None:
    """Call until it succeeds; a RateLimited is waited out (its retry_after), never lost."""
    deadline = time.monotonic() + 120
    while True:
        attempts[0] += 1
        try:
            call()
            return
        except RateLimited as exc:
            if time.monotonic() > deadline:
                raise
            time.sleep(exc.retry_after)


def run_requests(redis_url: str, prefix: str, base: str, ids: list[str], out: Any) -> None:
    session = requests.Session()
    session.mount(base, RateLimitedAdapter(_limiter(redis_url, prefix), "api"))
    attempts = [0]
    for call_id in ids:
        url = f"{base}/api/{call_id}"
        _retrying(lambda url=url: session.get(url).raise_for_status(), attempts)
    out.put(attempts[0])


def run_httpx(redis_url: str, prefix: str, base: str, ids: list[str], out: Any) -> None:
    transport = RateLimitedTransport(_limiter(redis_url, prefix), "api")
    attempts = [0]
    with httpx.Client(transport=transport, base_url=base) as client:
        for call_id in ids:
            path = f"/api/{call_id}"
            _retrying(lambda path=path: client.get(path).raise_for_status(), attempts)
    out.put(attempts[0])


def run_httpx_async(redis_url: str, prefix: str, base: str, ids: list[str], out: Any) -> None:
    async def main() -> int:
        transport = AsyncRateLimitedTransport(_limiter(redis_url, prefix), "api")
        attempts = 0
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:

            async def one(call_id: str) -> None:
                nonlocal attempts
                while True:
                    attempts += 1
                    try:
                        (await client.get(f"/api/{call_id}")).raise_for_status()
                        return
                    except RateLimited as exc:
                        await asyncio.sleep(exc.retry_after)

            half = len(ids) // 2  # two concurrent streams of calls per process

            async def stream(part: list[str]) -> None:
                for call_id in part:
                    await one(call_id)

            await asyncio.gather(stream(ids[:half]), stream(ids[half:]))
        return attempts

    out.put(asyncio.run(main()))


# -- a GraphQL points budget (queue_ratelimit.testing.cost) ---------------------------------

GRAPHQL = IntegrationConfig(
    name="graphql",
    rate_limit_per_sec=20.0,
    burst_size=5.0,
    max_rate=1000.0,
    max_wait=5.0,
    max_backoff=10.0,
    limits=(  # a user who does not know the budget: a start above its restore rate, and more
        LimitConfig(
            name="points",
            rate_limit_per_sec=150.0,
            burst_size=150.0,
            min_rate=10.0,
            max_rate=4000.0,
            increase_factor=20.0,
        ),
    ),
    dialect=BUILTIN_INTEGRATIONS["shopify-graphql"].dialect,  # Shopify's extensions.cost
)


def run_graphql(
    redis_url: str, prefix: str, base: str, calls: list[tuple[str, int]], out: Any
) -> None:
    """POST each ``(call id, cost)`` with its cost as the estimate until it is served."""
    limiter = Limiter(RedisBackend(redis_url, prefix=prefix), {"graphql": GRAPHQL})
    session = requests.Session()
    adapter = RateLimitedAdapter(
        limiter, "graphql", estimate=lambda request: {"points": _cost_of(request.url)}
    )
    session.mount(base, adapter)
    attempts = [0]
    for call_id, cost in calls:
        url = f"{base}/shop/{call_id}?cost={cost}"
        _retrying(lambda url=url: session.post(url, json={"query": "{shop}"}), attempts)
    out.put(attempts[0])


def _cost_of(url: str) -> float:
    return float(url.rsplit("cost=", 1)[1])
