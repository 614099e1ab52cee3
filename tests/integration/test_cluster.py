"""The limiter on a real 3-master Redis Cluster: tenants spread over the shards, a slot moved
under load without a failed decision, a dead master that is only its own keys' outage, real
Celery workers and the CLI on the cluster."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from queue_ratelimit import signals
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.cli import main
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import BackendUnavailable, QueueRateLimitError
from queue_ratelimit.limiter import Limiter
from tests.deployments import ClusterProcesses, migrate_slot
from tests.support import SVC

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix() -> str:
    return f"qrltest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cluster_limiter(redis_cluster: ClusterProcesses, prefix: str) -> Iterator[Limiter]:
    backend = RedisBackend(redis_cluster.url, prefix=prefix)
    limiter = Limiter(backend, {"svc": SVC})
    yield limiter
    backend.purge("svc")


def _keys_per_node(cluster: ClusterProcesses, prefix: str) -> dict[int, int]:
    counts = {}
    for port in cluster.ports:
        with cluster.node_client(port) as node:
            counts[port] = sum(1 for _ in node.scan_iter(match=f"{{{prefix}:*", count=1000))
    return counts


def test_300_tenants_of_one_integration_land_on_every_master(
    redis_cluster: ClusterProcesses, cluster_limiter: Limiter, prefix: str
) -> None:
    for n in range(300):
        assert cluster_limiter.acquire("svc", f"tenant-{n}").granted
    counts = _keys_per_node(redis_cluster, prefix)
    assert sum(counts.values()) >= 300
    assert all(count >= 50 for count in counts.values()), counts  # about 100 each
    backend = cluster_limiter.backend
    assert isinstance(backend, RedisBackend) and isinstance(backend.client, RedisCluster)
    slots = {backend.client.keyslot(backend.keys_for("svc", f"tenant-{n}")[0]) for n in range(300)}
    assert len(slots) > 250  # one slot per tenant, not one per integration
    # the tools see every master's keys
    assert {t for _, t in backend.scan("svc")} == {f"tenant-{n}" for n in range(300)}


def test_the_cli_lists_and_resets_keys_on_every_master(
    redis_cluster: ClusterProcesses,
    cluster_limiter: Limiter,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tenants = [f"t{n}" for n in range(30)]
    for tenant in tenants:
        cluster_limiter.acquire("svc", tenant)
    args = ["--redis", redis_cluster.url, "--prefix", prefix]
    main([*args, "status", "--json"])  # run from here, with no config naming "svc"
    listed = capsys.readouterr().out
    assert all(f'"{tenant}"' in listed for tenant in tenants)
    main([*args, "reset", "svc", "--yes"])
    capsys.readouterr()
    assert list(cluster_limiter.backend.scan("svc")) == []  # type: ignore[attr-defined]


def test_a_slot_migration_under_load_fails_no_decision(
    private_cluster: ClusterProcesses, prefix: str
) -> None:
    backend = RedisBackend(private_cluster.url, prefix=prefix)
    config = IntegrationConfig(
        name="svc", rate_limit_per_sec=1000.0, burst_size=1000.0, max_rate=2000.0
    )
    limiter = Limiter(backend, {"svc": config})
    tenants = [f"busy-{n}" for n in range(6)]
    for tenant in tenants:
        limiter.acquire("svc", tenant)
    client = backend.client
    assert isinstance(client, RedisCluster)
    moving = {client.keyslot(backend.keys_for("svc", t)[0]) for t in tenants[:3]}
    outages: list[dict[str, object]] = []

    def outage(_sender: object, **fields: object) -> None:
        outages.append(fields)

    signals.backend_unavailable.connect(outage)
    errors: list[BaseException] = []
    decided = [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            for tenant in tenants:
                try:
                    decision = limiter.acquire("svc", tenant)
                    limiter.on_success("svc", tenant, lease=decision.lease)
                    decided[0] += 1
                except (QueueRateLimitError, redis.RedisError) as exc:
                    errors.append(exc)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        for slot in moving:
            source = private_cluster.port_for_slot(slot)
            target = next(port for port in private_cluster.ports if port != source)
            before = decided[0]
            moved = migrate_slot(private_cluster, slot, source, target, hold=1.0, batch_pause=0.5)
            assert moved >= 1
            assert decided[0] > before  # decisions went on while the slot moved
    finally:
        stop.set()
        worker.join(timeout=30)
        signals.backend_unavailable.disconnect(outage)
    assert errors == []
    assert outages == []
    for tenant in tenants[:3]:  # each moved key lives on, on its new master
        assert limiter.snapshot("svc", tenant).exists


def test_a_dead_master_is_the_outage_of_its_own_keys_only(
    private_cluster: ClusterProcesses, prefix: str
) -> None:
    backend = RedisBackend(private_cluster.url, prefix=prefix)
    limiter = Limiter(backend, {"svc": SVC}, probe_interval=0.5)  # fails closed (the default)
    client = backend.client
    assert isinstance(client, RedisCluster)
    tenants = [f"t{n}" for n in range(60)]
    home = {
        t: private_cluster.port_for_slot(client.keyslot(backend.keys_for("svc", t)[0]))
        for t in tenants
    }
    breaker_home = private_cluster.port_for_slot(client.keyslot(backend.keys_for("svc", None)[2]))
    for tenant in tenants:
        assert limiter.acquire("svc", tenant).granted
    dead = next(port for port in private_cluster.ports if port != breaker_home)
    private_cluster.kill(dead)
    lost = [t for t in tenants if home[t] == dead]
    kept = [t for t in tenants if home[t] != dead]
    assert lost and kept
    for _ in range(3):  # and again after the dead shard was marked down and probed
        for tenant in kept:
            limiter.on_success("svc", tenant)
            assert limiter.acquire("svc", tenant, max_wait=1.0).granted
        for tenant in lost:
            with pytest.raises(BackendUnavailable):
                limiter.acquire("svc", tenant)
