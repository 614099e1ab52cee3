"""The limiter on a real 3-master Redis Cluster: tenants spread over the shards, a slot moved
under load without a failed decision, a dead master that is only its own keys' outage, and
the CLI on the cluster (Celery workers on it: ``test_sentinel.py``)."""

from __future__ import annotations

import logging
import threading
import time
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
from tests.support import SVC, new_prefix, wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def cluster_limiter(redis_cluster: ClusterProcesses, cluster_prefix: str) -> Iterator[Limiter]:
    """A limiter on the session's cluster, under a prefix whose keys are deleted after."""
    backend = RedisBackend(redis_cluster.url, prefix=cluster_prefix)
    yield Limiter(backend, {"svc": SVC})
    backend.client.close()


@pytest.fixture
def private_backend(private_cluster: ClusterProcesses) -> Iterator[RedisBackend]:
    """A backend on a cluster of the test's own (it kills a node or moves slots)."""
    backend = RedisBackend(private_cluster.url, prefix=new_prefix())
    yield backend
    backend.client.close()


def _keys_per_node(cluster: ClusterProcesses, prefix: str) -> dict[int, int]:
    counts = {}
    for port in cluster.ports:
        with cluster.node_client(port) as node:
            counts[port] = sum(1 for _ in node.scan_iter(match=f"{{{prefix}:*", count=1000))
    return counts


def test_300_tenants_of_one_integration_land_on_every_master(
    redis_cluster: ClusterProcesses, cluster_limiter: Limiter, cluster_prefix: str
) -> None:
    for n in range(300):
        assert cluster_limiter.acquire("svc", f"tenant-{n}").granted
    counts = _keys_per_node(redis_cluster, cluster_prefix)
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
    cluster_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tenants = [f"t{n}" for n in range(30)]
    for tenant in tenants:
        cluster_limiter.acquire("svc", tenant)
    args = ["--redis", redis_cluster.url, "--prefix", cluster_prefix]
    main([*args, "status", "--json"])  # run from here, with no config naming "svc"
    listed = capsys.readouterr().out
    assert all(f'"{tenant}"' in listed for tenant in tenants)
    main([*args, "reset", "svc", "--yes"])
    capsys.readouterr()
    assert list(cluster_limiter.backend.scan("svc")) == []  # type: ignore[attr-defined]


def test_a_slot_migration_under_load_fails_no_decision(
    private_cluster: ClusterProcesses, private_backend: RedisBackend
) -> None:
    config = IntegrationConfig(
        name="svc",
        rate_limit_per_sec=1000.0,
        burst_size=1000.0,
        max_rate=2000.0,
        max_concurrent=2,  # each tenant's slot holds two keys: its state and its leases
    )
    limiter = Limiter(private_backend, {"svc": config})
    tenants = [f"busy-{n}" for n in range(6)]
    moving = tenants[:3]
    for tenant in moving:  # a lease held through the move: the leases key is in the slot
        assert limiter.acquire("svc", tenant).lease is not None
    client = private_backend.client
    assert isinstance(client, RedisCluster)
    outages: list[dict[str, object]] = []

    def outage(_sender: object, **fields: object) -> None:
        outages.append(fields)

    signals.backend_unavailable.connect(outage)
    errors: list[BaseException] = []
    decided = dict.fromkeys(tenants, 0)
    stop = threading.Event()

    def load(tenant: str) -> None:  # acquire and report with the second lease, over and over
        while not stop.is_set():
            try:
                decision = limiter.acquire("svc", tenant)
                limiter.on_success("svc", tenant, lease=decision.lease)
                decided[tenant] += 1
            except (QueueRateLimitError, redis.RedisError) as exc:
                errors.append(exc)

    workers = [threading.Thread(target=load, args=(tenant,)) for tenant in tenants]
    for worker in workers:
        worker.start()
    try:
        for tenant in moving:
            slot = client.keyslot(private_backend.keys_for("svc", tenant)[0])
            source = private_cluster.port_for_slot(slot)
            migrating = threading.Event()
            mover = threading.Thread(
                target=migrate_slot,
                args=(private_cluster, slot, source, private_cluster.other_master(source)),
                # one key at a time, 0.5 s apart: the slot's keys sit split across the two
                # masters for half a second (a two-key script meets TRYAGAIN meanwhile)
                kwargs={"keys_per_batch": 1, "batch_pause": 0.5, "migrating": migrating},
            )
            mover.start()
            assert migrating.wait(timeout=10)
            before = dict(decided)
            mover.join(timeout=30)
            assert not mover.is_alive()
            assert private_cluster.port_for_slot(slot) != source
            # the other tenants were decided all along; this one waited out the half
            # second its keys were split (within transient_retry), and goes on
            assert all(decided[t] > before[t] for t in tenants if t != tenant), decided
            had = before[tenant]
            wait_until(lambda tenant=tenant, had=had: decided[tenant] > had, timeout=10)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        signals.backend_unavailable.disconnect(outage)
    assert errors == []
    assert outages == []
    for tenant in moving:  # each moved key lives on, on its new master, lease and all
        assert limiter.snapshot("svc", tenant).leases == 1


def test_a_dead_master_is_the_outage_of_its_own_keys_only(
    private_cluster: ClusterProcesses,
    private_backend: RedisBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe_interval = 0.5
    limiter = Limiter(private_backend, {"svc": SVC}, probe_interval=probe_interval)  # closed
    client = private_backend.client
    assert isinstance(client, RedisCluster)

    def home_of(key: str) -> int:
        return private_cluster.port_for_slot(client.keyslot(key))

    tenants = [f"t{n}" for n in range(60)]
    home = {t: home_of(private_backend.keys_for("svc", t)[0]) for t in tenants}
    breaker_home = home_of(private_backend.keys_for("svc", None)[2])
    for tenant in tenants:
        assert limiter.acquire("svc", tenant).granted
    dead = private_cluster.other_master(breaker_home)
    private_cluster.kill(dead)
    lost = [t for t in tenants if home[t] == dead]
    kept = [t for t in tenants if home[t] != dead]
    assert lost and kept
    for round_ in range(3):  # the dead shard fails, is marked down, then probed and fails
        if round_:
            time.sleep(probe_interval)  # the scenario: a probe interval passes
        for tenant in kept:
            limiter.on_success("svc", tenant)
            assert limiter.acquire("svc", tenant, max_wait=1.0).granted
        for tenant in lost:
            with pytest.raises(BackendUnavailable):
                limiter.acquire("svc", tenant)
    # an operator's set meanwhile: stored (the overrides hash's master lives), and obeyed at
    # the next decision of every tenant on a live master; the dead shards' copies are logged
    # (the logger's own level: an earlier test's in-process Celery worker may raise the root's)
    with caplog.at_level(logging.WARNING, logger="queue_ratelimit.backends.redis_overrides"):
        limiter.set_override("svc", min_rate=4.0, max_rate=4.0, by="test")  # pinned at 4/s
    assert any("did not reach every shard" in r.getMessage() for r in caplog.records)
    for tenant in kept:
        limiter.acquire("svc", tenant, max_wait=1.0)
        assert limiter.snapshot("svc", tenant).limit().rate == 4.0
