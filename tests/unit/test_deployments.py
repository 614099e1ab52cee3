"""The Redis Cluster and Redis Sentinel deployments of ``tests.deployments``, on real
servers: every slot served, keys spread by hash tag, a slot moved with its keys (and
worked on while half-moved), the replica fed, a dead master replaced by its replica."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster

import tests.conftest
from queue_ratelimit.backends.redis_connect import client_from_url, describe
from tests.deployments import SLOTS, ClusterProcesses, SentinelGroup, migrate_slot
from tests.support import new_prefix, wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def cluster_client(redis_cluster: ClusterProcesses) -> Iterator[RedisCluster]:
    client = redis_cluster.client(decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def tag() -> str:
    """A per-test prefix for hash tags (``{<tag>-<n>}:x``): keys of this test only."""
    return new_prefix()


@pytest.fixture
def cleanup(cluster_client: RedisCluster, tag: str) -> Iterator[None]:
    yield
    keys = list(cluster_client.scan_iter(match=f"{{{tag}-*", count=1000))
    if keys:
        cluster_client.delete(*keys)  # split per slot by the client


def write_keys(client: RedisCluster, keys: list[str], value: str | None = None) -> list[str]:
    """Set each key to ``value`` (default: its index)."""
    for n, key in enumerate(keys):
        client.set(key, n if value is None else value)
    return keys


def spread(tag: str, count: int) -> list[str]:
    """``count`` keys, each under a hash tag of its own."""
    return [f"{{{tag}-{n}}}:x" for n in range(count)]


def test_three_masters_cover_every_slot(
    redis_cluster: ClusterProcesses, cluster_client: RedisCluster
) -> None:
    primaries = sorted(node.port for node in cluster_client.get_primaries())
    assert primaries == sorted(redis_cluster.ports)
    # the URL the fixture hands out reaches every master through the library's parser
    client = client_from_url(redis_cluster.url)
    assert isinstance(client, RedisCluster)
    try:
        assert sorted(node.port for node in client.get_primaries()) == sorted(redis_cluster.ports)
    finally:
        client.close()
    with redis_cluster.node_client(redis_cluster.ports[0]) as node:
        ranges = node.execute_command("CLUSTER", "SLOTS")
    owners = {int(master[1]) for _first, _last, master, *_ in ranges}
    assert owners == set(redis_cluster.ports)
    assert sum(last - first + 1 for first, last, *_ in ranges) == SLOTS


@pytest.mark.usefixtures("cleanup")
def test_hash_tags_spread_over_every_master(
    redis_cluster: ClusterProcesses, cluster_client: RedisCluster, tag: str
) -> None:
    keys = write_keys(cluster_client, spread(tag, 300))
    per_node = {}
    for port in redis_cluster.ports:
        with redis_cluster.node_client(port, decode_responses=True) as node:
            found = list(node.scan_iter(match=f"{{{tag}-*", count=1000))
        # each key sits on the master that owns its slot
        assert {redis_cluster.port_for_slot(cluster_client.keyslot(k)) for k in found} <= {port}
        per_node[port] = len(found)
    assert all(count > 0 for count in per_node.values()), per_node
    assert sum(per_node.values()) == len(keys)
    # the cluster client's SCAN visits every master
    assert len(list(cluster_client.scan_iter(match=f"{{{tag}-*", count=1000))) == len(keys)


def keys_in_slot(cluster: ClusterProcesses, port: int, slot: int) -> int:
    with cluster.node_client(port) as node:
        return int(node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))


def test_migrate_slot_moves_its_keys(private_cluster: ClusterProcesses, tag: str) -> None:
    with private_cluster.client(decode_responses=True) as client:
        keys = write_keys(client, [f"{{{tag}}}:{n}" for n in range(250)])
        slot = client.keyslot(keys[0])
        source = private_cluster.port_for_slot(slot)
        target = private_cluster.other_master(source)

        moved = migrate_slot(private_cluster, slot, source, target, keys_per_batch=40)

        assert moved == len(keys)
        assert private_cluster.port_for_slot(slot) == target
        assert (
            keys_in_slot(private_cluster, source, slot),
            keys_in_slot(private_cluster, target, slot),
        ) == (0, 250)
        # the client follows MOVED to the new owner
        assert client.mget(keys) == [str(n) for n in range(len(keys))]


def test_a_held_migration_keeps_the_slot_usable(
    private_cluster: ClusterProcesses, tag: str
) -> None:
    with private_cluster.client(decode_responses=True) as client:
        old = write_keys(client, [f"{{{tag}}}:old-{n}" for n in range(20)], "old")
        slot = client.keyslot(old[0])
        source = private_cluster.port_for_slot(slot)
        target = private_cluster.other_master(source)
        migrating = threading.Event()
        mover = threading.Thread(
            target=migrate_slot,
            args=(private_cluster, slot, source, target),
            kwargs={"hold": 1.5, "keys_per_batch": 5, "batch_pause": 0.1, "migrating": migrating},
        )
        mover.start()
        try:
            assert migrating.wait(timeout=10)
            # existing keys are still read on the source; a new key goes to the
            # target after ASK
            assert [client.get(key) for key in old] == ["old"] * len(old)
            client.set(f"{{{tag}}}:new", "new")
            assert keys_in_slot(private_cluster, target, slot) == 1
            assert private_cluster.port_for_slot(slot) == source  # still half-moved
        finally:
            mover.join(timeout=30)
        assert not mover.is_alive()
        assert private_cluster.port_for_slot(slot) == target
        assert client.get(f"{{{tag}}}:new") == "new"
        assert [client.get(key) for key in old] == ["old"] * len(old)


def sees_failed(cluster: ClusterProcesses, port: int, victim: int) -> bool:
    with cluster.node_client(port, decode_responses=True) as node:
        lines = node.execute_command("CLUSTER", "NODES").splitlines()
        state = node.execute_command("CLUSTER", "INFO")
    flags = [line.split()[2].split(",") for line in lines if f":{victim}@" in line]
    return flags[0].count("fail") == 1 and "cluster_state:ok" in state


def test_a_killed_master_leaves_the_others_serving(
    private_cluster: ClusterProcesses, tag: str
) -> None:
    with private_cluster.client(decode_responses=True) as client:
        keys = write_keys(client, spread(tag, 30), "v")
        victim = private_cluster.ports[0]
        private_cluster.kill(victim)
        survivors = [k for k in keys if private_cluster.port_for_slot(client.keyslot(k)) != victim]
        assert survivors
        # the other masters mark it failed and stay ok (no full coverage needed)
        wait_until(
            lambda: all(
                sees_failed(private_cluster, port, victim) for port in private_cluster.ports[1:]
            ),
            timeout=15,
        )
        with private_cluster.client(decode_responses=True) as fresh:
            assert [fresh.get(key) for key in survivors] == ["v"] * len(survivors)


def test_the_replica_gets_the_masters_writes(redis_sentinel: SentinelGroup, tag: str) -> None:
    client = redis_sentinel.client(decode_responses=True)
    try:
        client.set(f"{tag}:k", "v")
        assert client.wait(1, 5000) == 1
        [replica_port] = redis_sentinel.replica_ports()
        assert replica_port != redis_sentinel.master_port()
        with redis.Redis(port=replica_port, decode_responses=True) as replica:
            assert replica.get(f"{tag}:k") == "v"
        client.delete(f"{tag}:k")
    finally:
        client.close()
    # the URL the fixture hands out reaches the master through the library's parser
    master = client_from_url(redis_sentinel.url)
    assert isinstance(master, redis.Redis)
    try:
        assert master.info("replication")["role"] == "master"
        assert describe(master) == redis_sentinel.url
    finally:
        master.close()


def test_a_killed_master_is_replaced_by_its_replica(private_sentinel: SentinelGroup) -> None:
    client = private_sentinel.client(decode_responses=True)
    try:
        client.set("k", "v")
        assert client.wait(1, 5000) == 1
        [replica_port] = private_sentinel.replica_ports()

        old_port = private_sentinel.kill_master()

        new_port = private_sentinel.wait_for_failover(old_port, timeout=30)
        assert new_port == replica_port
        assert client.get("k") == "v"  # the same client: it reconnects to the new master
        with redis.Redis(port=new_port, decode_responses=True) as master:
            assert master.info("replication")["role"] == "master"
            assert master.get("k") == "v"
    finally:
        client.close()


def test_a_missing_redis_server_fails_never_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="redis-server"):
        tests.conftest._redis_server()
