"""Helpers shared by tests, importable by spawned worker processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.limiter import Limiter

SVC = IntegrationConfig(
    name="svc",
    rate_limit_per_sec=10.0,
    burst_size=1.0,
    increase_factor=1.0,
    decrease_factor=0.5,
    min_rate=1.0,
    max_rate=20.0,
    cooldown_multiplier=2.0,
    max_backoff=60.0,
    max_wait=0.0,
)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, every: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def redis_limiter(url: str, prefix: str, config: IntegrationConfig, now: float | None) -> Limiter:
    backend = RedisBackend(url, prefix=prefix, clock=(lambda: now) if now is not None else None)
    return Limiter(backend, {config.name: config})


def backoff_after_barrier(
    url: str,
    prefix: str,
    config: IntegrationConfig,
    barrier: Any,
    use_epoch: bool,
    results: Any,
) -> None:
    """Worker process: acquire, wait for the others, then report one backoff."""
    limiter = redis_limiter(url, prefix, config, None)
    decision = limiter.acquire(config.name, max_wait=60.0)
    barrier.wait(timeout=30)
    epoch = decision.epoch if use_epoch else None
    result = limiter.on_backoff(config.name, retry_after=30.0, epoch=epoch)
    results.put(result.decreased)


def hold_lease_forever(
    url: str, prefix: str, config: IntegrationConfig, now: float | None, ready: Any
) -> None:
    """Worker process: take a concurrency lease, say so, then hang until killed."""
    limiter = redis_limiter(url, prefix, config, now)
    decision = limiter.acquire(config.name, max_wait=60.0)
    ready.put(decision.lease)
    time.sleep(3600)
