"""The goodput benchmark's Dramatiq app: rows (d) ``BucketRateLimiter`` and (f) this project.

Started by the driver as ``dramatiq goodput_dramatiq --queues <api> <other>`` with the
``GP_*`` environment (see ``goodput_common``), on a Redis broker in the run's namespace.
Every actor takes ``(base, tenant, limit)`` and makes one call to ``<base>/<tenant>/<id>``.

* ``gp_ours_<queue>``: this project's ``RateLimitMiddleware`` (integration named like the
  queue, tenant = the second argument), the call through ``RateLimitedAdapter``.
* ``gp_bucket_<queue>``: Dramatiq's ``BucketRateLimiter`` (``limit`` calls per 1 s bucket,
  one key per queue and tenant) around a plain call; ``RateLimitExceeded`` and the 429's
  ``HTTPError`` are retried by ``Retries`` (min_backoff 1 s, max_backoff 10 s, 30 retries).
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import goodput_common as common
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware
from dramatiq.rate_limits import BucketRateLimiter
from dramatiq.rate_limits.backends import RedisBackend as DramatiqRedisBackend

from queue_ratelimit import Limiter
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.integrations.dramatiq import RateLimitMiddleware

RUN = os.environ.get(common.RUN_ENV, "gp")
REDIS_URL = os.environ.get(common.REDIS_ENV, "redis://127.0.0.1:6379/0")
QUEUES = common.queues()
RATE = float(os.environ.get(common.RATE_ENV, "40"))
NAMESPACE = f"{RUN}-dramatiq"


class Bookkeeping(Middleware):
    """Records each retry (a requeue) and each visible failure, per message id."""

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        if exception is None:
            return
        if message.failed:
            common.records().failed(message.message_id, type(exception).__name__)
        else:
            common.records().requeued(message.message_id)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        if message.failed:
            common.records().failed(message.message_id, "failed")


limiter = Limiter(
    RedisBackend(REDIS_URL, prefix=RUN, idle_ttl=common.idle_ttl()),
    {q: common.ours_config(q, RATE) for q in QUEUES},
)
broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)  # type: ignore[no-untyped-call]
broker.add_middleware(CurrentMessage())
broker.add_middleware(RateLimitMiddleware(limiter))
if os.environ.get("GP_WORKER") == "1":
    broker.add_middleware(Bookkeeping())
    common.record_our_signals()
dramatiq.set_broker(broker)
buckets = DramatiqRedisBackend(url=REDIS_URL)


def _message_id() -> str:
    message = CurrentMessage.get_current_message()
    if message is None:
        raise RuntimeError("no current message")
    return str(message.message_id)


def _declare(queue: str) -> None:
    @dramatiq.actor(
        actor_name=f"gp_ours_{queue}",
        queue_name=queue,
        integration=queue,
        tenant=lambda base, tenant, limit: tenant or None,
        max_retries=3,
        min_backoff=500,
    )
    def ours(base: str, tenant: str, limit: float) -> None:
        common.call_ours(lambda: limiter, queue, base, tenant, _message_id())

    @dramatiq.actor(
        actor_name=f"gp_bucket_{queue}",
        queue_name=queue,
        max_retries=30,
        min_backoff=1000,
        max_backoff=10_000,
    )
    def bucket(base: str, tenant: str, limit: float) -> None:
        task_id = _message_id()
        key = f"{RUN}:bucket:{queue}:{tenant or common.NO_TENANT}"
        gate = BucketRateLimiter(buckets, key, limit=int(limit), bucket=1000)  # type: ignore[no-untyped-call]
        with gate.acquire():
            common.call_plain(base, tenant, task_id)
        common.records().done(task_id)


for _queue in QUEUES:
    _declare(_queue)
