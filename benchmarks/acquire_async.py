"""Benchmark ``AsyncLimiter.acquire`` on Redis against ``Limiter.acquire``, in one process.

Side by side, in interleaved slices of 0.5 s (drift in machine load falls on every row
alike), every limit so large that each call is granted:

* ``sync Limiter``: ``limiter.acquire`` back to back (one call in flight);
* ``raw async EVALSHA``: ``await client.evalsha`` of a ``return 1`` script on
  ``redis.asyncio`` (the asyncio round-trip floor);
* ``AsyncLimiter``: ``await limiter.acquire`` back to back (one in flight);
* ``AsyncLimiter xN``: N coroutines each awaiting acquires back to back on one event loop
  (N in flight on the client's pool: what a service with N concurrent requests sees).

    python benchmarks/acquire_async.py [--redis URL] [--seconds S] [--concurrency N]

Prints acquires/s and the ratio of each row to the sync limiter's; exit status 0 whenever
the run completes (figures are reported, never judged fatal).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

import redis
import redis.asyncio
from text_table import table

import queue_ratelimit
from queue_ratelimit import AsyncLimiter, IntegrationConfig, Limiter
from queue_ratelimit.backends.redis import RedisBackend

HUGE = 1_000_000_000
SLICE = 0.5
WARMUP = 200
CONFIG = IntegrationConfig(
    "bench", rate_limit_per_sec=HUGE, burst_size=HUGE, min_rate=1, max_rate=HUGE, max_wait=0
)


async def _flood(call: Callable[[], Awaitable[bool]], seconds: float, tasks: int) -> int:
    """Calls completed by ``tasks`` coroutines each calling back to back for ``seconds``."""
    deadline = time.perf_counter() + seconds

    async def one() -> int:
        done = 0
        while time.perf_counter() < deadline:
            done += await call()
        return done

    return sum(await asyncio.gather(*(one() for _ in range(tasks))))


def _sync_slice(call: Callable[[], bool], seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    done = 0
    while time.perf_counter() < deadline:
        done += call()
    return done


async def _run(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    tag = f"qrl-bench-async-{secrets.token_hex(3)}"
    sync = Limiter(RedisBackend(url, prefix=tag), {"bench": CONFIG})
    limiter = AsyncLimiter(RedisBackend(url, prefix=tag + "a"), {"bench": CONFIG})
    raw_client = redis.asyncio.Redis.from_url(url)
    sha = await raw_client.script_load("return 1")

    async def raw() -> bool:
        return bool(await raw_client.evalsha(sha, 1, f"{{{tag}}}:raw") == 1)  # type: ignore[misc]

    async def ours() -> bool:
        return (await limiter.acquire("bench")).granted

    async def blocking(seconds: float) -> int:  # (the loop has nothing else to run)
        return _sync_slice(lambda: sync.acquire("bench").granted, seconds)

    rows: dict[str, Callable[[float], Awaitable[int]]] = {
        "sync Limiter": blocking,
        "raw async EVALSHA": lambda s: _flood(raw, s, 1),
        "AsyncLimiter": lambda s: _flood(ours, s, 1),
        f"AsyncLimiter x{concurrency}": lambda s: _flood(ours, s, concurrency),
    }
    for _ in range(WARMUP):
        sync.acquire("bench")
        await ours()
        await raw()
    done = dict.fromkeys(rows, 0)
    rounds = max(1, round(seconds / SLICE))
    for _ in range(rounds):
        for name, measure in rows.items():
            done[name] += await measure(seconds / rounds)
    try:
        return {name: calls / seconds for name, calls in done.items()}
    finally:
        await limiter.aclose()
        await raw_client.aclose()
        _cleanup(url, tag)


def _cleanup(url: str, tag: str) -> None:
    client = redis.Redis.from_url(url)
    for pattern in (f"*{tag}*",):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per row")
    parser.add_argument("--concurrency", type=int, default=16, help="coroutines in the xN row")
    args = parser.parse_args(argv)
    print(
        f"queue_ratelimit {queue_ratelimit.__version__}, redis-py {redis.__version__}, "
        f"Python {platform.python_version()}, {args.redis}, {args.seconds:g} s per row, "
        "one process"
    )
    rates = asyncio.run(_run(args.redis, args.seconds, args.concurrency))
    base = rates["sync Limiter"]
    body = [[name, f"{rate:,.0f}", f"{rate / base:.2f}"] for name, rate in rates.items()]
    print(table(["contender", "acquires/s", "vs sync Limiter"], body, "lrr"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
