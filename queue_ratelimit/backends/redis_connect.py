"""Redis clients for every deployment, from one URL: a single server, a Cluster, Sentinel.

* ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix:///path?db=N``:
  one server;
* ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (``rediss+cluster://`` with
  TLS): a Redis Cluster, found from any of the nodes given;
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``
  (``rediss+sentinel://``): the master Sentinel names ``service``, followed across failovers;
  the password is the master's (and the sentinels' when they ask for one).

Clients made here fail fast: 1 s to connect, 2 s per reply, two quick retries, so a worker
learns within seconds, not tens of seconds, that Redis is down. A client handed in is used
as it is; ``timeout_warning`` tells when it has no socket timeout (a hung server would then
block its callers for as long as it hangs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from queue_ratelimit.backends import REDIS_SCHEMES, URL_FORMS, redacted
from queue_ratelimit.errors import ConfigError

Client = redis.Redis | RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

CONNECT_TIMEOUT, REPLY_TIMEOUT = 1.0, 2.0
USAGE = f"use {URL_FORMS}"


@dataclass(frozen=True)
class _Kit:
    """redis-py's classes for one I/O style: blocking, or ``redis.asyncio``."""

    redis: Any
    cluster: Any
    node: Any
    sentinel: Any
    retry: Any


_BLOCKING = _Kit(redis.Redis, RedisCluster, ClusterNode, Sentinel, Retry)
_ASYNCIO = _Kit(
    redis.asyncio.Redis,
    redis.asyncio.cluster.RedisCluster,
    redis.asyncio.cluster.ClusterNode,
    redis.asyncio.sentinel.Sentinel,
    redis.asyncio.retry.Retry,
)


def _fast_fail(kit: _Kit = _BLOCKING) -> dict[str, Any]:
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": REPLY_TIMEOUT,
        "retry": kit.retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
    }


def client_from_url(url: str, field: str = "url") -> Client:
    """A fast-failing client for ``url``; ``ConfigError`` naming ``field`` when it is not one
    of the forms above (the message never shows a password)."""
    client: Client = _from_url(url, field, _BLOCKING)
    return client


def async_client_from_url(url: str, field: str = "url") -> AsyncClient:
    """``client_from_url`` for an event loop: a ``redis.asyncio`` client of the same kind,
    failing as fast. Its connections belong to the loop that first uses them."""
    client: AsyncClient = _from_url(url, field, _ASYNCIO)
    return client


def _from_url(url: str, field: str, kit: _Kit) -> Any:
    if not isinstance(url, str) or not url.startswith(REDIS_SCHEMES):
        shown = redacted(url) if isinstance(url, str) else url
        raise ConfigError(None, field, shown, USAGE)
    scheme = url.partition("://")[0]
    try:
        if scheme.endswith("+cluster"):
            return _cluster(url, scheme.startswith("rediss"), kit)
        if scheme.endswith("+sentinel"):
            return _sentinel(url, scheme.startswith("rediss"), kit)
        return kit.redis.from_url(url, **_fast_fail(kit))
    except (ValueError, IndexError) as exc:
        raise ConfigError(None, field, redacted(url), f"{exc}; {USAGE}") from exc


async def aclose_client(client: AsyncClient) -> None:
    """Close an asyncio client made here, with the connections a Sentinel client keeps to
    the sentinels (closing the master's client leaves them open)."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


def async_twin(client: Client) -> AsyncClient | None:
    """A ``redis.asyncio`` client to the one server ``client`` talks to, with its connection
    options (credentials, database, TLS, protocol), failing fast; None for a Cluster or
    Sentinel client, or options the asyncio client does not take (give the backend a URL or
    an asyncio client for those)."""
    if isinstance(client, RedisCluster):
        return None
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return None
    kwargs = {
        key: value
        for key, value in pool.connection_kwargs.items()
        if (key in _TWINNED or key.startswith("ssl_")) and value is not None
    }
    if "path" in kwargs:
        kwargs["unix_socket_path"] = kwargs.pop("path")
    if issubclass(pool.connection_class, redis.SSLConnection):
        kwargs["ssl"] = True
    try:
        twin: AsyncClient = redis.asyncio.Redis(**{**kwargs, **_fast_fail(_ASYNCIO)})
    except TypeError:
        return None
    return twin


_TWINNED = frozenset(  # (and every ssl_... option)
    (
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "credential_provider",
        "client_name",
        "protocol",
        "socket_keepalive",
        "socket_keepalive_options",
    )
)


def fail_fast_copy(connection: redis.Redis) -> redis.Redis:
    """A client to ``connection``'s server whose calls give up as a URL's do (RQ's own
    connection waits minutes, for its blocking dequeue)."""
    pool = connection.connection_pool
    kwargs = {**pool.connection_kwargs, **_fast_fail()}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


def _hosts(netloc: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The ``host:port`` list of a cluster or sentinel URL, and its credentials."""
    auth, at, hosts = netloc.rpartition("@")
    creds: dict[str, Any] = {}
    if at:
        user, _, password = auth.partition(":")
        if user:
            creds["username"] = unquote(user)
        if password:
            creds["password"] = unquote(password)
    nodes = []
    for part in hosts.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"{part!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, creds


def _cluster(url: str, tls: bool, kit: _Kit) -> Any:
    parts = urlsplit(url)
    nodes, creds = _hosts(parts.netloc)
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only")
    return kit.cluster(
        startup_nodes=[kit.node(host, port) for host, port in nodes],
        ssl=tls,
        require_full_coverage=False,
        **creds,
        **_fast_fail(kit),
    )


def _sentinel(url: str, tls: bool, kit: _Kit) -> Any:
    parts = urlsplit(url)
    nodes, creds = _hosts(parts.netloc)
    path = [part for part in parts.path.split("/") if part]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("the path must be /service_name or /service_name/db")
    options = {**_fast_fail(kit), "ssl": tls}
    sentinel = kit.sentinel(nodes, sentinel_kwargs={**creds, **options}, **options)
    db = int(path[1]) if len(path) == 2 else 0
    return sentinel.master_for(path[0], db=db, **creds, **options)


def describe(client: Client) -> str:
    """Where ``client`` goes, as a URL without its password."""
    if isinstance(client, RedisCluster):
        nodes = ",".join(node.name for node in client.get_primaries())  # type: ignore[no-untyped-call]
        return f"redis+cluster://{nodes}"
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if isinstance(pool, SentinelConnectionPool):
        sentinels = ",".join(
            "{host}:{port}".format(**each.connection_pool.connection_kwargs)
            for each in pool.sentinel_manager.sentinels
        )
        return f"redis+sentinel://{sentinels}/{pool.service_name}/{kwargs.get('db', 0)}"
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if kwargs.get("ssl") or "ssl_cert_reqs" in kwargs else "redis"
    return f"{scheme}://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def timeout_warning(client: Client) -> str | None:
    """Why a client handed in may block its callers: it has no socket timeout."""
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes()  # type: ignore[no-untyped-call]
        kwargs = nodes[0].redis_connection.connection_pool.connection_kwargs if nodes else {}
    else:
        kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("socket_timeout") is None:
        return (
            f"the Redis client for {describe(client)} has no socket_timeout: a hung server "
            "blocks every decision for as long as it hangs (give it socket_timeout=2, or a URL)"
        )
    return None
