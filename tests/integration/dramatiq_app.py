"""The Dramatiq app the integration tests run in real worker processes.

Everything test-specific comes from the environment, so a worker started with
``python -m dramatiq tests.integration.dramatiq_app`` matches the test that started it:
QRL_BROKER (a redis:// or amqp:// URL), QRL_REDIS (limiter state and results), QRL_PREFIX
(limiter keys, broker and result namespaces, and the integration-name suffix), QRL_UPSTREAM
(the hidden-limit server). Importing it connects to nothing.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import redis
import requests
from dramatiq.broker import Broker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend as ResultsBackend

from queue_ratelimit import IntegrationConfig, Limiter, requeue_after
from queue_ratelimit.backends import open_backend
from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.integrations.dramatiq import RateLimitMiddleware
from queue_ratelimit.testing.upstream import LOCK_TIMEOUT

PREFIX = os.environ.get("QRL_PREFIX", "qrltest")
SUFFIX = PREFIX.replace("qrltest-", "")[:12]
NOTION = f"notion{SUFFIX}"
GITHUB = f"github{SUFFIX}"
NAMESPACE = f"{PREFIX}-dramatiq"  # the Redis broker's keys
RESULTS = f"{PREFIX}-results"
UPSTREAM = os.environ.get("QRL_UPSTREAM", "http://127.0.0.1:1")
REDIS_URL = os.environ.get("QRL_REDIS", "redis://127.0.0.1:6379/0")
LIMITER_URL = os.environ.get("QRL_LIMITER", REDIS_URL)  # the limiter's state (any store)
GITHUB_MAX_WAIT = 0.5  # the actor's own max_wait, below the integration's

COMMON: dict[str, Any] = dict(
    rate_limit_per_sec=15.0,  # above the tests' hidden limit: the bodies meet 429s
    burst_size=1.0,
    increase_factor=0.2,
    decrease_factor=0.5,
    min_rate=0.5,
    max_rate=50.0,
    max_wait=1.0,
    max_backoff=120.0,
    requeue_budget=200,
    breaker_failure_threshold=5,
    breaker_open_seconds=10.0,
    dialect={"contention_codes": [LOCK_TIMEOUT]},  # what the upstream's busy() answers
)
CONFIGS = {
    NOTION: IntegrationConfig(name=NOTION, **COMMON),
    GITHUB: IntegrationConfig(name=GITHUB, **COMMON),
}


def make_broker(url: str, **options: Any) -> Broker:
    """A broker for ``url``; the Redis one in this session's namespace."""
    if url.startswith("amqp"):
        return RabbitmqBroker(url=url, **options)
    return RedisBroker(url=url, namespace=NAMESPACE, **options)


def results_backend(url: str) -> ResultsBackend:
    return ResultsBackend(url=url, namespace=RESULTS, use_namespace_prefix_keys=True)


limiter = Limiter(open_backend(LIMITER_URL, prefix=PREFIX), CONFIGS)
broker = make_broker(os.environ.get("QRL_BROKER", REDIS_URL))
broker.add_middleware(CurrentMessage())
broker.add_middleware(Results(backend=results_backend(REDIS_URL)))
broker.add_middleware(RateLimitMiddleware(limiter, poll=0.5))
dramatiq.set_broker(broker)

_session = requests.Session()
for name in CONFIGS:
    _session.mount(f"{UPSTREAM}/{name}/", RateLimitedAdapter(limiter, name, tenant=None))
_redis = redis.Redis.from_url(REDIS_URL)


def _message_id() -> str:
    message = CurrentMessage.get_current_message()
    assert message is not None
    return str(message.message_id)


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    assert message is not None
    return int(message.options.get("retries", 0))


def _call(integration: str) -> None:
    _session.get(f"{UPSTREAM}/{integration}/{_message_id()}").raise_for_status()


@dramatiq.actor(
    queue_name=NOTION,
    actor_name="tests.sync_notion",
    integration=NOTION,
    max_retries=0,
    store_results=True,
)
def sync_notion(page: int) -> dict[str, Any]:
    """One upstream call; an error fails at once (for the breaker test)."""
    _call(NOTION)
    return {"retries": _retries(), "page": page}


@dramatiq.actor(
    queue_name=GITHUB,
    actor_name="tests.sync_repo",
    integration=GITHUB,
    tenant=lambda installation, repo: installation,
    max_wait=GITHUB_MAX_WAIT,
    max_retries=2,
    min_backoff=100,
    store_results=True,
)
def sync_repo(installation: str, repo: int) -> dict[str, Any]:
    """A tenant function and Retries that must never see a rate limit."""
    _call(GITHUB)
    return {"retries": _retries(), "repo": repo}


@dramatiq.actor(
    queue_name=NOTION,
    actor_name="tests.throttled",
    integration=NOTION,
    requeue_budget=3,
    store_results=True,
)
def throttled() -> None:
    """Always meets a backoff it reports itself: for the requeue budget."""
    _redis.incr(f"{PREFIX}:runs:{_message_id()}")
    raise requeue_after(retry_after=0.2, report=False)


# -- for the shared scenarios (rigs.py, test_scenarios.py) -----------------------------------


@dramatiq.actor(
    queue_name=NOTION,
    actor_name="tests.held",
    integration=NOTION,
    max_retries=0,
    store_results=True,
)
def held() -> str:
    """Calls the upstream, then holds until the test releases it (a kill lands mid-task)."""
    from tests.support import hold

    _call(NOTION)
    hold(_redis, PREFIX, _message_id())
    return _message_id()


if os.environ.get("QRL_WORKER") == "1":
    from tests.support import record_events

    record_events(lambda: _redis, PREFIX)

if os.environ.get("QRL_HEARTBEAT_TIMEOUT") and isinstance(broker, RedisBroker):
    # the kill scenario: a dead worker's unacknowledged messages go back to their queue
    # once its heartbeat is this old (ms), checked on every broker call (dramatiq's
    # MAINTENANCE_SCALE), not one in a thousand
    broker.heartbeat_timeout = int(os.environ["QRL_HEARTBEAT_TIMEOUT"])
    broker.maintenance_chance = 1_000_000
