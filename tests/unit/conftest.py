"""The shared behaviour suite's fixture: one limiter per backend over the test's fake clock.

Each backend runs twice (``facade``): under ``Limiter``, and under an ``AsyncLimiter``
whose coroutines the same tests drive on an event loop of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.backends.postgres import PostgresBackend
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.backends.sqlite import SQLiteBackend
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.limiter import Limiter
from tests.conftest import FakeClock
from tests.support import SVC

MakeLimiter = Callable[..., Limiter]


@pytest.fixture(params=["memory", "redis", "cluster", "sqlite", "postgres"])
def make_limiter(
    request: pytest.FixtureRequest,
    clock: FakeClock,
    facade: Callable[[Limiter], Any],
    tmp_path: Path,
) -> MakeLimiter:
    """Build a limiter over the parametrised backend, sharing the test's fake clock (each
    limiter made is another process's view of the same shared state, but in memory)."""

    url, prefix = None, None
    if request.param == "sqlite":  # a file, shared by the limiters the test makes
        url, prefix = f"sqlite:///{tmp_path / 'limiter.db'}", "qrltest"
    elif request.param == "postgres":  # the tests' database, a scope of the test's own
        url = request.getfixturevalue("postgres_url")
        prefix = request.getfixturevalue("pg_prefix")
    elif request.param != "memory":  # a single server, or a 3-master Redis Cluster
        cluster = request.param == "cluster"
        where = request.getfixturevalue("redis_cluster" if cluster else "redis_url")
        url = where.url if cluster else where
        prefix = request.getfixturevalue("cluster_prefix" if cluster else "key_prefix")

    def make(
        config: IntegrationConfig = SVC, *, remember_for: float = 7 * 86400.0, **changes: object
    ) -> Limiter:
        config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]
        if url is None:
            backend: object = MemoryBackend(clock=clock, remember_for=remember_for)
        elif request.param == "sqlite":
            path = url[len("sqlite:///") :]
            backend = SQLiteBackend(path, prefix=prefix, clock=clock, remember_for=remember_for)
        elif request.param == "postgres":
            backend = PostgresBackend(url, prefix=prefix, clock=clock, remember_for=remember_for)
            request.addfinalizer(backend.close)
        else:
            backend = RedisBackend(
                url,  # type: ignore[arg-type]
                prefix=prefix,  # type: ignore[arg-type]
                clock=clock,
                remember_for=remember_for,
            )
        return facade(Limiter(backend, {config.name: config}))  # type: ignore[arg-type,no-any-return]

    make.kind = request.param  # type: ignore[attr-defined]
    make.url = url  # type: ignore[attr-defined]
    make.prefix = prefix  # type: ignore[attr-defined]
    return make
