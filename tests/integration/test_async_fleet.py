"""Four processes of asyncio callers sharing one Redis limiter against a hidden limit.

Each process runs 50 concurrent requests (200 in all) on one event loop in asyncio's debug
mode, through the httpx async transport or the aiohttp middleware on an ``AsyncLimiter``;
the same 200 through the sync httpx transport from threads give the figure to compare with.
Nothing may be lost (every request answered 200 once it waited out its 429s, each id served
exactly once), the limiter's blocking Redis client is never used from a loop (the exact
test of a blocking call), no callback runs past asyncio's slow-callback threshold, and the
429 share stays within the sync clients' own.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import httpx
import pytest

from queue_ratelimit import IntegrationConfig, Limiter
from queue_ratelimit.http import AsyncRateLimitedTransport, RateLimitedTransport
from queue_ratelimit.http_aiohttp import RateLimitMiddleware
from queue_ratelimit.testing import HiddenLimitUpstream
from tests.support import BlockingCounted, new_prefix

pytestmark = pytest.mark.redis

PROCESSES, PER_PROCESS = 4, 50
LIMIT = 40.0  # the upstream's hidden limit, per second
API = IntegrationConfig(
    name="api", rate_limit_per_sec=LIMIT / 2, burst_size=2.0, max_rate=LIMIT * 5, max_wait=10.0
)
SLOW_CALLBACK = 1.0  # seconds: asyncio's debug mode logs any callback that runs longer (0.5 s
# was passed once by a step starved of CPU on the 2-core CI; a blocking call lasts its wait)
RETRIES = 30


class _SlowCallbacks(logging.Handler):
    """Counts asyncio's debug-mode reports of a callback that held the loop too long."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing"):
            self.seen.append(message)


async def _httpx(limiter: Limiter, urls: list[str]) -> list[int]:
    transport = AsyncRateLimitedTransport(limiter, "api", retries=RETRIES)
    async with httpx.AsyncClient(transport=transport, timeout=30.0) as client:
        answers = await asyncio.gather(*(client.get(url) for url in urls))
    return [answer.status_code for answer in answers]


async def _aiohttp(limiter: Limiter, urls: list[str]) -> list[int]:
    middleware = RateLimitMiddleware(limiter, "api", retries=RETRIES)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:

        async def one(url: str) -> int:
            async with session.get(url) as answer:
                await answer.read()
                return answer.status

        return await asyncio.gather(*(one(url) for url in urls))


def _threads(limiter: Limiter, urls: list[str]) -> list[int]:
    transport = RateLimitedTransport(limiter, "api", retries=RETRIES)
    with (
        httpx.Client(transport=transport, timeout=30.0) as client,
        ThreadPoolExecutor(max_workers=16) as pool,
    ):
        return [answer.status_code for answer in pool.map(client.get, urls)]


def fleet_member(kind: str, redis_url: str, prefix: str, urls: list[str], out: Any) -> None:
    """One process of the fleet: its requests, the slow callbacks and blocking calls seen."""
    backend = BlockingCounted(redis_url, prefix=prefix)
    limiter = Limiter(backend, {"api": API})
    slow = _SlowCallbacks()
    logging.getLogger("asyncio").addHandler(slow)

    async def main() -> list[int]:
        asyncio.get_running_loop().slow_callback_duration = SLOW_CALLBACK
        try:
            return await (_httpx if kind == "httpx" else _aiohttp)(limiter, urls)
        finally:
            await backend.aclose()

    try:
        sync = kind == "sync"
        statuses = _threads(limiter, urls) if sync else asyncio.run(main(), debug=True)
        out.put((statuses, slow.seen, backend.blocking))
    except BaseException as exc:
        out.put(([], [repr(exc)], -1))
        raise


def _run_fleet(kind: str, redis_url: str) -> tuple[float, list[int], list[str], list[int]]:
    """The 429 share, statuses, slow callbacks and blocking calls of one fleet's run."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    prefix = new_prefix()  # each fleet starts from nothing learned
    with HiddenLimitUpstream(LIMIT, 1.0) as upstream:
        ids = [[uuid.uuid4().hex for _ in range(PER_PROCESS)] for _ in range(PROCESSES)]
        procs = [
            ctx.Process(
                target=fleet_member,
                args=(kind, redis_url, prefix, [f"{upstream.url}/api/{i}" for i in mine], out),
            )
            for mine in ids
        ]
        for proc in procs:
            proc.start()
        results = [out.get(timeout=180) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        statuses = [status for result in results for status in result[0]]
        assert statuses == [200] * (PROCESSES * PER_PROCESS), (kind, results)
        assert upstream.served_once({i for mine in ids for i in mine}), kind  # none lost
        throttled = upstream.count(429)
        share = throttled / (throttled + upstream.count(200))
    slow = [message for result in results for message in result[1]]
    return share, statuses, slow, [result[2] for result in results]


def test_async_callers_in_four_processes_lose_nothing_block_nothing_and_throttle_no_more(
    redis_url: str,
) -> None:
    sync_share, _, _, _ = _run_fleet("sync", redis_url)
    for kind in ("httpx", "aiohttp"):
        share, _, slow, blocking = _run_fleet(kind, redis_url)
        print(f"{kind}: 429 share {share:.3f} (sync clients {sync_share:.3f})")
        assert blocking == [0] * PROCESSES, kind  # every limiter call awaited redis.asyncio
        assert slow == [], kind  # no callback held the loop past the threshold
        assert share <= sync_share + 0.05, (kind, share, sync_share)
