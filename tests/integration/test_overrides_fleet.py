"""``set`` while four worker processes run: each takes the new bound at its next decision
(the overrides' version, checked in the decision's script call), without a restart, and
without waiting for its next read of the integration's record (``breaker_poll``, set long
here to show that it is not what they wait for): on one Redis for the integration's own
key, and on a Redis Cluster for a tenant's, whose keys are in another slot than the
overrides hash (they check its version's copy in their shard's slot)."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from queue_ratelimit import IntegrationConfig, Limiter
from queue_ratelimit.backends.redis import RedisBackend
from tests.support import most_in_one_second, new_prefix, wait_until

pytestmark = pytest.mark.redis

FAST, SLOW = 40.0, 10.0
CONFIG = IntegrationConfig(
    name="svc",
    rate_limit_per_sec=FAST,
    burst_size=1.0,
    min_rate=1.0,
    max_rate=FAST,
    increase_factor=0.0,
    slow_start=False,
    max_wait=5.0,
)


def worker(url: str, prefix: str, tenant: str | None, granted: Any, stop: Any, out: Any) -> None:
    """Acquire and sleep the wait, back to back, until ``stop``; the time of each grant."""
    limiter = Limiter(RedisBackend(url, prefix=prefix, breaker_poll=60.0), {"svc": CONFIG})
    times = []
    while not stop.is_set():
        limiter.wait("svc", tenant)
        times.append(time.time())
        with granted.get_lock():
            granted.value += 1
    out.put(times)


@pytest.mark.parametrize(("deployment", "tenant"), [("redis_url", None), ("redis_cluster", "acme")])
def test_a_max_rate_set_while_four_workers_run_holds_from_their_next_decision(
    request: pytest.FixtureRequest, deployment: str, tenant: str | None
) -> None:
    found = request.getfixturevalue(deployment)
    url = found if isinstance(found, str) else found.url
    prefix = new_prefix()
    ctx = multiprocessing.get_context("spawn")
    granted, stop, out = ctx.Value("i", 0), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(url, prefix, tenant, granted, stop, out)) for _ in "1234"
    ]
    for proc in procs:
        proc.start()
    try:
        wait_until(lambda: granted.value >= 80, timeout=60)  # two seconds or so at 40/s
        operator = Limiter(RedisBackend(url, prefix=prefix), {"svc": CONFIG})
        operator.set_override("svc", max_rate=SLOW, by="test")  # (the integration's: all keys)
        switched, at_switch = time.time(), granted.value
        wait_until(lambda: granted.value >= at_switch + 40, timeout=60)  # ~4 s at 10/s
    finally:
        stop.set()
        times = [at for _ in procs for at in out.get(timeout=60)]
        for proc in procs:
            proc.join(timeout=30)
    before = [at for at in times if at < switched]
    # each worker's slot granted before the switch (one each, 25 ms apart at 40/s) is behind
    after = [at for at in times if at > switched + 0.2]
    assert most_in_one_second(before) > SLOW + 2  # faster than the bound allows, fleet-wide
    assert after and most_in_one_second(after) <= SLOW + 2  # the new bound: rate + burst
    rate = (len(after) - 1) / (max(after) - min(after))
    assert rate <= SLOW * 1.1
