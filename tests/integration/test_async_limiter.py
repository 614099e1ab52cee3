"""``AsyncLimiter`` beyond the shared behaviour suite (which runs it on every backend): the
``call`` context manager, where its Redis clients come from, and one backend shared with a
sync limiter."""

from __future__ import annotations

import asyncio

import pytest
import redis

from queue_ratelimit import AsyncLimiter, ConfigError, Limiter
from queue_ratelimit.backends.redis import RedisBackend
from tests.deployments import ClusterProcesses, SentinelGroup
from tests.support import SVC, BlockingCounted

pytestmark = pytest.mark.redis


def _limiter(backend: RedisBackend, **changes: object) -> AsyncLimiter:
    return AsyncLimiter(backend, {"svc": SVC.replace(**changes)})


def test_call_reports_what_the_block_recorded(redis_url: str, key_prefix: str) -> None:
    backend = BlockingCounted(redis_url, prefix=key_prefix)
    limiter = _limiter(backend, max_wait=5.0, burst_size=5.0)

    async def main() -> None:
        async with limiter.call("svc", "ok") as call:
            call.answered(200)
        assert call.outcome is not None and call.outcome.kind == "success"
        assert (await limiter.snapshot("svc", "ok")).limit().rate == 11.0  # +1 per success
        async with limiter.call("svc", "quiet"):
            pass  # nothing recorded: the call went well
        assert (await limiter.snapshot("svc", "quiet")).limit().rate == 11.0
        async with limiter.call("svc", "429") as call:
            call.answered(429, {"Retry-After": "7"})
        assert call.outcome is not None and call.outcome.kind == "backoff"
        assert (await limiter.snapshot("svc", "429")).cooldown_left == pytest.approx(7.0, abs=0.5)
        async with limiter.call("svc", "down") as call:
            call.failed()
        assert (await limiter.snapshot("svc", "down")).breaker_failures == 1
        await limiter.aclose()

    asyncio.run(main())
    assert backend.blocking == 0


def test_a_block_that_raises_reports_nothing_and_gives_its_lease_back(
    redis_url: str, key_prefix: str
) -> None:
    limiter = _limiter(RedisBackend(redis_url, prefix=key_prefix), max_concurrent=1, max_wait=5.0)

    async def main() -> None:
        with pytest.raises(KeyError):
            async with limiter.call("svc"):
                raise KeyError("the caller's own error")
        after = await limiter.snapshot("svc")
        assert (after.leases, after.limit().rate, after.breaker_failures) == (0, 10.0, 0)
        async with limiter.call("svc"):  # the only lease is free again
            pass
        await limiter.aclose()

    asyncio.run(main())


def test_a_cluster_client_without_its_url_is_refused_at_once(
    redis_cluster: ClusterProcesses, cluster_prefix: str
) -> None:
    client = redis_cluster.client()
    try:
        with pytest.raises(ConfigError, match="async_client"):
            AsyncLimiter(RedisBackend(client, prefix=cluster_prefix), {"svc": SVC})
        with_url = RedisBackend(client, prefix=cluster_prefix, async_client=redis_cluster.url)
        limiter = AsyncLimiter(with_url, {"svc": SVC})

        async def main() -> bool:
            try:
                return (await limiter.acquire("svc")).granted
            finally:
                await limiter.aclose()

        assert asyncio.run(main())
    finally:
        client.close()


def test_a_plain_client_gets_an_asyncio_twin_of_its_server(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    backend = BlockingCounted(client, prefix=key_prefix)
    limiter = _limiter(backend)
    sync = Limiter(RedisBackend(redis_url, prefix=key_prefix), {"svc": SVC})

    async def main() -> None:
        assert (await limiter.acquire("svc")).granted
        await limiter.aclose()

    try:
        asyncio.run(main())
        assert sync.snapshot("svc").exists  # the same server and database, through the twin
        assert backend.blocking == 0
    finally:
        client.close()


def test_a_sentinel_url_serves_the_async_limiter(
    redis_sentinel: SentinelGroup, key_prefix: str
) -> None:
    backend = BlockingCounted(redis_sentinel.url, prefix=key_prefix)
    limiter = _limiter(backend)

    async def main() -> None:
        await limiter.on_backoff("svc", retry_after=5.0)
        assert (await limiter.snapshot("svc")).cooldown_left > 4.0
        await limiter.aclose()

    asyncio.run(main())
    assert backend.blocking == 0


def test_sharing_a_sync_limiter_shares_its_backend_and_outage_state(
    redis_url: str, key_prefix: str
) -> None:
    sync = Limiter(RedisBackend(redis_url, prefix=key_prefix), {"svc": SVC})
    shared = AsyncLimiter.sharing(sync)
    assert shared.backend is sync.backend and shared.configs is sync.configs

    async def main() -> None:
        await shared.on_backoff("svc", retry_after=3.0)
        await shared.aclose()

    asyncio.run(main())
    assert sync.snapshot("svc").cooldown_left > 2.0


def test_a_call_cancelled_while_it_sleeps_for_its_slot_gives_its_lease_back(
    redis_url: str, key_prefix: str
) -> None:
    backend = RedisBackend(redis_url, prefix=key_prefix)
    limiter = _limiter(
        backend,
        max_concurrent=1,
        rate_limit_per_sec=1.0,
        min_rate=1.0,
        burst_size=1.0,
        max_wait=5.0,
    )

    async def enter() -> None:
        async with limiter.call("svc"):
            pass

    async def main() -> int:
        await enter()  # spends the burst: the next slot is a second away
        sleeper = asyncio.create_task(enter())
        deadline = asyncio.get_running_loop().time() + 10
        while (await limiter.snapshot("svc")).leases == 0:  # it holds the lease, asleep
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        leases = (await limiter.snapshot("svc")).leases
        await limiter.aclose()
        return leases

    assert asyncio.run(main()) == 0
