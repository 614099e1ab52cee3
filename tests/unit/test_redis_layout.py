"""The key layout in Redis (``backends/redis_keys.py``, layout 5): tenants spread over the
integration's shard tags, each key named back by ``scan``, and the overrides' version copied
into every shard's slot by ``set`` (what a tenant's decision checks on a Redis Cluster)."""

from __future__ import annotations

import hashlib
import threading

import pytest

from queue_ratelimit import Limiter
from queue_ratelimit.backends import redis_keys as layout
from queue_ratelimit.backends.redis import RedisBackend
from tests.conftest import FakeClock
from tests.deployments import ClusterProcesses
from tests.support import SVC

TENANTS = ["acme", "a:b", "{x}", "ws 1", "#" + "ab" * 32, "é", "x" * 500, "t=a"]


@pytest.mark.parametrize("chained", [False, True])
@pytest.mark.parametrize("tenant", [None, *TENANTS])
def test_every_state_key_names_its_key_back(tenant: str | None, chained: bool) -> None:
    names = layout.key_names("qrl", "svc", tenant, chained)
    expected = tenant  # (a long one: named by its digest, the state keeping its name)
    if tenant is not None and len(tenant) >= 500:
        expected = "#" + hashlib.sha256(tenant.encode()).hexdigest()
    assert layout.parse_state_key("qrl", names.state) == ("svc", expected)
    tag = names.state[: names.state.index("}") + 1]
    assert names.version.startswith(tag)  # the version's key is in the state's slot


def test_a_tenants_keys_are_in_its_shard_and_tenants_fill_the_shards() -> None:
    tags = {layout.key_names("qrl", "svc", f"t{n}").state.split("}")[0] for n in range(5000)}
    assert len(tags) > layout.SHARDS * 0.95  # 5,000 tenants reach nearly every shard
    assert all(tag.startswith("{qrl:svc:s=") for tag in tags)
    assert {key.split("}")[0] for key in layout.version_keys("qrl", "svc")} >= tags


@pytest.mark.parametrize(
    "key",
    [
        "{qrl:svc:t=acme}:state.v5",  # layout 4's tenant key
        "{qrl:svc:s=1}:t=acme:state.v5",  # a tenant outside its shard
        "{qrl:svc:s=1}:state.v5",
        "{qrl:svc}:t=:state.v5",
        "{qrl:svc}:x=acme:state.v5",
        "{qrl:svc}:t=a}b:state.v5",
        "{other:svc}:state.v5",
        "{qrl:svc}:version.v1",
    ],
)
def test_keys_of_other_layouts_are_not_listed(key: str) -> None:
    assert layout.parse_state_key("qrl", key) is None


def _copies(backend: RedisBackend) -> set[str]:
    client = backend.client
    keys = layout.version_keys(backend.prefix, "svc")
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "#v")
    return {value.decode() if value else "" for value in pipe.execute()}


@pytest.mark.parametrize(
    ("deployment", "prefixed"), [("redis_url", "key_prefix"), ("redis_cluster", "cluster_prefix")]
)
def test_operators_writing_at_once_leave_every_copy_at_the_last_version(
    request: pytest.FixtureRequest, deployment: str, prefixed: str
) -> None:
    found, prefix = request.getfixturevalue(deployment), request.getfixturevalue(prefixed)
    url = found if isinstance(found, str) else found.url
    operators = [Limiter(RedisBackend(url, prefix=prefix), {"svc": SVC}) for _ in range(4)]
    start = threading.Barrier(len(operators))

    def write(operator: Limiter, n: int) -> None:
        start.wait(timeout=30)
        for step in range(5):
            operator.set_override("svc", f"t{n}", max_rate=float(step + 1))

    threads = [threading.Thread(target=write, args=(op, n)) for n, op in enumerate(operators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    backend = operators[0].backend
    assert isinstance(backend, RedisBackend)
    held = backend.client.hget(layout.integration_keys(prefix, "svc")[2], "#v")
    # each copy at the last, whoever wrote last
    assert _copies(backend) == {held.decode()}  # type: ignore[union-attr]
    for tenant in ("t0", "t1", "t2", "t3"):  # each tenant's last bound
        assert operators[1].snapshot("svc", tenant).limit().rate == 5.0


def test_a_copy_gone_with_its_day_is_written_again_and_the_next_change_is_seen(
    redis_cluster: ClusterProcesses, cluster_prefix: str, clock: FakeClock
) -> None:
    url, config = redis_cluster.url, SVC.replace(burst_size=1.0, max_rate=10.0)  # 10/s
    worker_backend = RedisBackend(url, prefix=cluster_prefix, breaker_poll=60.0, clock=clock)
    worker = Limiter(worker_backend, {"svc": config})
    operator = Limiter(RedisBackend(url, prefix=cluster_prefix, clock=clock), {"svc": config})
    client = operator.backend.client  # type: ignore[attr-defined]
    operator.set_override("svc", max_rate=5.0)
    client.delete(*layout.version_keys(cluster_prefix, "svc"))  # as their expiry would
    assert worker.acquire("svc", "acme").granted  # its first view: 5/s
    assert worker.acquire("svc", "acme", max_wait=10.0).wait == pytest.approx(0.2)
    copy = layout.key_names(cluster_prefix, "svc", "acme").version
    assert client.hget(copy, "#v") is not None  # written again by the decision
    operator.set_override("svc", max_rate=2.0)  # the worker's view is fresh for 60 s
    assert worker.acquire("svc", "beta").granted
    assert worker.acquire("svc", "beta", max_wait=10.0).wait == pytest.approx(0.5)


def test_a_decision_keeps_its_shards_copy_and_versions_grow_past_a_purge(
    redis_url: str, key_prefix: str
) -> None:
    operator = Limiter(RedisBackend(redis_url, prefix=key_prefix), {"svc": SVC})
    worker = Limiter(RedisBackend(redis_url, prefix=key_prefix, breaker_poll=60.0), {"svc": SVC})
    client = operator.backend.client  # type: ignore[attr-defined]
    copy = layout.key_names(key_prefix, "svc", "acme").version
    assert worker.acquire("svc", "acme").granted
    assert client.hget(copy, "#v") == b"0"  # none set yet: the copy says so
    assert 0 < client.ttl(copy) <= 86400
    operator.set_override("svc", "acme", max_rate=2.0)
    before = int(client.hget(copy, "#v"))
    worker.acquire("svc", "acme", max_wait=10.0)  # its next decision: reads the override
    operator.backend.purge("svc")  # while the worker still holds the override
    assert client.hget(copy, "#v") is None
    assert worker.acquire("svc", "acme").granted  # writes its own view back: the old version
    assert int(client.hget(copy, "#v")) == before
    operator.set_override("svc", "acme", min_rate=5.0, max_rate=5.0)  # later still
    assert int(client.hget(copy, "#v")) > before
    worker.acquire("svc", "acme", max_wait=10.0)  # sees it: reads the overrides again
    assert worker.snapshot("svc", "acme").limit().rate == 5.0
