"""Shared fixtures: a real Redis server and a real PostgreSQL server (each started here when
none is reachable), fake clocks."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio.from_thread
import psycopg
import pytest
import redis

from queue_ratelimit.async_limiter import AsyncLimiter
from queue_ratelimit.backends.postgres import PostgresBackend
from queue_ratelimit.limiter import Limiter
from tests.deployments import ClusterProcesses, SentinelGroup
from tests.postgres_server import PostgresProcess, with_database
from tests.postgres_server import reachable as pg_reachable
from tests.support import Blocking, RedisProcess, delete_keys, new_prefix, reachable

REDIS_HINT = (
    "Redis is needed by the test suite and none is reachable, and no redis-server binary "
    "was found to start one. Install it (Debian/Ubuntu: apt-get install redis-server; "
    "macOS: brew install redis) or set REDIS_URL to a reachable server."
)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A reachable Redis: $REDIS_URL, else 127.0.0.1:6379, else a redis-server we start."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if reachable(url):
        yield url
        return
    try:
        server = RedisProcess(_redis_server(REDIS_HINT)).start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    url = server.url
    os.environ["REDIS_URL"] = url
    try:
        yield url
    finally:
        server.close()


def _create_schema(url: str) -> None:
    backend = PostgresBackend(url)
    try:
        backend.create_schema()
    finally:
        backend.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of the tests' own, with the limiter's tables, on a reachable PostgreSQL:
    $QRL_POSTGRES_URL, else postgres@127.0.0.1:5432, else a server we start."""
    url = os.environ.get("QRL_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    server = None
    if not pg_reachable(url):
        try:
            server = PostgresProcess().start()
        except RuntimeError as exc:
            pytest.fail(str(exc))
        url = server.url
        os.environ["QRL_POSTGRES_URL"] = url
    try:
        url = with_database(url)
        _create_schema(url)
        yield url
    finally:
        if server is not None:
            server.close()


@pytest.fixture
def private_postgres() -> Iterator[PostgresProcess]:
    """A PostgreSQL server of this test's own, started, its ``url`` a database with the
    limiter's tables: the test may stop and start it (its rows survive)."""
    try:
        server = PostgresProcess().start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        server.url = with_database(server.url)
        _create_schema(server.url)
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_prefix(postgres_url: str) -> Iterator[str]:
    """A scope of this test's own in the tests' database; its rows are deleted afterwards."""
    prefix = new_prefix()
    yield prefix
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for table in ("qrl_keys", "qrl_integrations", "qrl_overrides"):
            conn.execute(f"DELETE FROM {table} WHERE scope = %s", (prefix,))


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A prefix of this test's own; its keys are deleted afterwards (no FLUSHALL)."""
    prefix = new_prefix()
    yield prefix
    delete_keys(redis_client, f"{{{prefix}:*")


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    """A redis-server of this test's own, not yet started: the test takes it down and
    brings it back (fails, never skips, when the binary is missing)."""
    server = RedisProcess(_redis_server(REDIS_HINT))
    try:
        yield server
    finally:
        server.close()


DEPLOYMENT_HINT = (
    "The Redis Cluster and Redis Sentinel tests start their own servers from the "
    "redis-server binary (7.0 or later), and none was found on PATH. Install it "
    "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)."
)


def _redis_server(hint: str = DEPLOYMENT_HINT) -> str:
    """The redis-server binary; the test fails (never skips) with ``hint`` without it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(hint)
    return binary


Deployment = TypeVar("Deployment", ClusterProcesses, SentinelGroup)


def _started(deployment: Deployment) -> Iterator[Deployment]:
    """Start ``deployment`` (a start that fails fails the test), yield it, close it."""
    try:
        deployment.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield deployment
    finally:
        deployment.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterProcesses]:
    """A three-master Redis Cluster shared by this test process: keys under a per-test
    prefix, and no test kills its nodes or leaves a slot moved (``private_cluster``)."""
    yield from _started(ClusterProcesses(_redis_server()))


@pytest.fixture
def cluster_prefix(redis_cluster: ClusterProcesses) -> Iterator[str]:
    """``key_prefix`` on the session's cluster: its keys, on every master, are deleted."""
    prefix = new_prefix()
    yield prefix
    client = redis_cluster.client()
    try:
        delete_keys(client, f"{{{prefix}:*")
    finally:
        client.close()


@pytest.fixture
def private_cluster() -> Iterator[ClusterProcesses]:
    """A three-master Redis Cluster of this test's own, to kill nodes and move slots."""
    yield from _started(ClusterProcesses(_redis_server()))


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    """A master, its replica and a sentinel, shared by this test process: no test kills
    the master (``private_sentinel``)."""
    yield from _started(SentinelGroup(_redis_server()))


@pytest.fixture
def private_sentinel() -> Iterator[SentinelGroup]:
    """A master, its replica and a sentinel of this test's own, to kill the master."""
    yield from _started(SentinelGroup(_redis_server()))


@pytest.fixture(params=["sync", "async"])
def facade(request: pytest.FixtureRequest) -> Iterator[Callable[[Limiter], Any]]:
    """What a test written for ``Limiter`` drives: the limiter itself, or an
    ``AsyncLimiter`` sharing it, its coroutines run on an event loop of the test's own."""
    if request.param == "sync":
        yield lambda limiter: limiter
        return
    made: list[AsyncLimiter] = []

    with anyio.from_thread.start_blocking_portal() as portal:

        def wrap(limiter: Limiter) -> Any:
            made.append(AsyncLimiter.sharing(limiter))
            return Blocking(made[-1], portal)

        yield wrap
        for limiter in made:  # the loop's Redis connections, closed before the loop
            portal.call(limiter.aclose)
