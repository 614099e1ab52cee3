"""The aiohttp client middleware against a real local upstream with a hidden limit."""

from __future__ import annotations

import asyncio
import logging
import uuid

import aiohttp
import pytest

from queue_ratelimit import IntegrationConfig, Limiter, RateLimited
from queue_ratelimit.http import BY_TOKEN, token_tenant
from queue_ratelimit.http_aiohttp import RateLimitMiddleware
from queue_ratelimit.testing import HiddenLimitUpstream

API = IntegrationConfig(name="api", rate_limit_per_sec=5.0, burst_size=2.0, max_rate=100.0)


async def _get_all(middleware: RateLimitMiddleware, urls: list[str], token: str = "") -> list[int]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(middlewares=(middleware,), headers=headers) as session:

        async def one(url: str) -> int:
            async with session.get(url) as answer:
                await answer.read()
                return answer.status

        return await asyncio.gather(*(one(url) for url in urls))


def test_concurrent_tasks_are_served_once_without_blocking_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = Limiter(configs={"api": API})
    middleware = RateLimitMiddleware(limiter, "api", max_wait=10.0, retries=10)
    ids = [uuid.uuid4().hex for _ in range(50)]

    async def main(base: str) -> list[int]:
        asyncio.get_running_loop().slow_callback_duration = 0.05
        return await _get_all(middleware, [f"{base}/api/{call_id}" for call_id in ids])

    with caplog.at_level(logging.WARNING, logger="asyncio"), HiddenLimitUpstream(10, 1.0) as up:
        statuses = asyncio.run(main(up.url), debug=True)
        assert statuses == [200] * len(ids)
        assert up.served_once(set(ids))  # 429s met were waited out and retried, none lost
    blocked = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert blocked == []  # asyncio's debug mode names any callback slower than 50 ms


def test_a_backoff_raises_without_retries_and_tokens_key_tenants() -> None:
    limiter = Limiter(configs={"api": API.replace(rate_limit_per_sec=50.0, slow_start=False)})
    middleware = RateLimitMiddleware(limiter, "api", tenant=BY_TOKEN, max_wait=5.0)
    with HiddenLimitUpstream(2, 1.0) as upstream, pytest.raises(RateLimited):
        urls = [f"{upstream.url}/api/{uuid.uuid4().hex}" for _ in range(6)]
        asyncio.run(_get_all(middleware, urls, token="secret-1"))
    assert limiter.snapshot("api", token_tenant("Bearer secret-1")).exists
    assert not limiter.snapshot("api").exists  # keyed by the token's digest, not the API
