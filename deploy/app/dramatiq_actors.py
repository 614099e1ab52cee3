"""The stack's Dramatiq actors: ``dramatiq deploy.app.dramatiq_actors -Q crm helpdesk``.

``RateLimitMiddleware`` is added before the actors are declared; each actor consumes the
queue named like its integration. The broker is Redis or RabbitMQ by the scheme of
``DRAMATIQ_BROKER_URL`` (the Redis one under ``DRAMATIQ_NAMESPACE``, so it shares a Redis
with RQ safely). Importing this module connects to nothing.
"""

from __future__ import annotations

import functools

import dramatiq
import requests
from dramatiq.broker import Broker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from deploy.app.settings import Settings, call_upstream, start_observing, upstream_session
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.integrations.dramatiq import RateLimitMiddleware
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.registry import load_configs

settings = Settings.from_env()


def make_broker(url: str, namespace: str) -> Broker:
    """A RabbitMQ broker for ``amqp://`` URLs, else a Redis broker under ``namespace``."""
    if url.startswith(("amqp://", "amqps://")):
        return RabbitmqBroker(url=url)
    return RedisBroker(url=url, namespace=namespace)  # type: ignore[no-untyped-call]


limiter = Limiter(
    RedisBackend(settings.limiter_redis_url, prefix=settings.limiter_prefix), load_configs()
)
broker = make_broker(settings.dramatiq_broker_url, settings.dramatiq_namespace)
broker.add_middleware(CurrentMessage())
broker.add_middleware(RateLimitMiddleware(limiter))  # before any actor is declared
dramatiq.set_broker(broker)
start_observing()


@functools.cache
def _session() -> requests.Session:
    return upstream_session(limiter, settings.upstream_url)


def _message_id() -> str:
    message = CurrentMessage.get_current_message()
    if message is None:  # called directly, outside a worker
        raise RuntimeError("not running in a Dramatiq worker")
    return str(message.message_id)


@dramatiq.actor(queue_name="crm", integration="crm", actor_name="compose.sync_contact")
def sync_contact(contact: int) -> None:
    """One call to the crm bucket."""
    call_upstream(_session(), settings.upstream_url, "crm", _message_id())


@dramatiq.actor(queue_name="helpdesk", integration="helpdesk", actor_name="compose.sync_ticket")
def sync_ticket(ticket: int) -> None:
    """One call to the helpdesk bucket."""
    call_upstream(_session(), settings.upstream_url, "helpdesk", _message_id())
