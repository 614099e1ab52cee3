"""The aiohttp client middleware against a real local upstream with a hidden limit."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from queue_ratelimit import IntegrationConfig, Limiter, RateLimited
from queue_ratelimit.http import BY_TOKEN, token_tenant
from queue_ratelimit.http_aiohttp import RateLimitMiddleware
from queue_ratelimit.testing import HiddenLimitUpstream
from tests.support import BlockingCounted

API = IntegrationConfig(name="api", rate_limit_per_sec=5.0, burst_size=2.0, max_rate=100.0)


async def _get_all(middleware: RateLimitMiddleware, urls: list[str], token: str = "") -> list[int]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(middlewares=(middleware,), headers=headers) as session:

        async def one(url: str) -> int:
            async with session.get(url) as answer:
                await answer.read()
                return answer.status

        return await asyncio.gather(*(one(url) for url in urls))


def test_concurrent_tasks_are_served_once_without_a_blocking_call(
    redis_url: str, key_prefix: str
) -> None:
    backend = BlockingCounted(redis_url, prefix=key_prefix)
    limiter = Limiter(backend, {"api": API})
    middleware = RateLimitMiddleware(limiter, "api", max_wait=10.0, retries=10)
    ids = [uuid.uuid4().hex for _ in range(50)]

    async def main(base: str) -> list[int]:
        try:
            return await _get_all(middleware, [f"{base}/api/{call_id}" for call_id in ids])
        finally:
            await backend.aclose()

    with HiddenLimitUpstream(10, 1.0) as upstream:
        # debug mode: a coroutine never awaited, or a call from the wrong thread, raises
        statuses = asyncio.run(main(upstream.url), debug=True)
        assert statuses == [200] * len(ids)
        assert upstream.served_once(set(ids))  # 429s met were waited out, none lost
    assert backend.blocking == 0  # every decision and report awaited redis.asyncio
    assert limiter.snapshot("api").exists  # (and they reached the shared state)


def test_a_backoff_raises_without_retries_and_tokens_key_tenants() -> None:
    limiter = Limiter(configs={"api": API.replace(rate_limit_per_sec=50.0, slow_start=False)})
    middleware = RateLimitMiddleware(limiter, "api", tenant=BY_TOKEN, max_wait=5.0)
    with HiddenLimitUpstream(2, 1.0) as upstream, pytest.raises(RateLimited):
        urls = [f"{upstream.url}/api/{uuid.uuid4().hex}" for _ in range(6)]
        asyncio.run(_get_all(middleware, urls, token="secret-1"))
    assert limiter.snapshot("api", token_tenant("Bearer secret-1")).exists
    assert not limiter.snapshot("api").exists  # keyed by the token's digest, not the API
