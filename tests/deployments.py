"""Real Redis Cluster and Redis Sentinel deployments for tests, built from ``redis-server``
alone (no ``redis-cli``, no Docker).

``ClusterProcesses`` is a cluster of masters without replicas; ``migrate_slot`` moves one
slot between two of them exactly as ``redis-cli --cluster reshard`` does, and can hold the
slot half-moved so a test can work on it meanwhile. ``SentinelGroup`` is one master, one
replica and one sentinel that promotes the replica when the master dies. Both start on
free ports, each server in a temporary directory of its own (config, ``nodes.conf``, log),
wait on deadlines for the deployment to be ready, and ``close()`` kills every process they
started and removes those directories.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from tests.support import RedisProcess, free_port, wait_until

HOST = "127.0.0.1"
SLOTS = 16384
MASTERS = 3


class ClusterProcesses:
    """A Redis Cluster of ``MASTERS`` masters (no replicas) on 127.0.0.1, slots split evenly.

    Nodes answer reads for slots whose master is down (``cluster-allow-reads-when-down``)
    and keep serving their own slots when another master dies
    (``cluster-require-full-coverage no``); a master is declared failed after one second.
    """

    def __init__(self, binary: str) -> None:
        self._nodes = [RedisProcess(binary, role="cluster") for _ in range(MASTERS)]
        self._bus_ports = [free_port() for _ in self._nodes]
        self.ports = [node.port for node in self._nodes]
        self.url = "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)
        self.node_urls = [node.url for node in self._nodes]

    def start(self, timeout: float = 30.0) -> ClusterProcesses:
        """Start the nodes, give each its slots, introduce them; return once every node
        says ``cluster_state:ok`` and knows every master with its slots."""
        try:
            for node, bus_port in zip(self._nodes, self._bus_ports, strict=True):
                node.start([*node.args(), *self._cluster_args(node, bus_port)])
            self._assign_slots()
            self._meet()
            wait_until(self._ready, timeout, every=0.05)
        except (AssertionError, RuntimeError, redis.RedisError) as exc:
            logs = "\n".join(node.tail() for node in self._nodes)
            self.close()
            raise RuntimeError(f"Redis Cluster on ports {self.ports}: {exc}\n{logs}") from exc
        except BaseException:  # an interrupted start leaves no server behind either
            self.close()
            raise
        return self

    @staticmethod
    def _cluster_args(node: RedisProcess, bus_port: int) -> list[str]:
        # the bus port is set, not derived (port + 10000 passes 65535 for high ports)
        return [
            *("--cluster-enabled", "yes", "--cluster-port", str(bus_port)),
            *("--cluster-config-file", str(node.dir / "nodes.conf")),
            *("--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no"),
            *("--cluster-allow-reads-when-down", "yes"),
        ]

    def _assign_slots(self) -> None:
        count = len(self._nodes)
        for index, node in enumerate(self._nodes):
            first, last = index * SLOTS // count, (index + 1) * SLOTS // count - 1
            with node.client() as client:
                # distinct epochs up front, as redis-cli does: no collisions to settle
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)

    def _meet(self) -> None:
        with self._nodes[0].client() as client:
            for node, bus_port in zip(self._nodes[1:], self._bus_ports[1:], strict=True):
                client.execute_command("CLUSTER", "MEET", HOST, node.port, bus_port)

    def _ready(self) -> bool:
        expected = {
            "cluster_state": "ok",
            "cluster_slots_assigned": str(SLOTS),
            "cluster_known_nodes": str(len(self._nodes)),
            "cluster_size": str(len(self._nodes)),  # masters serving slots
        }
        for node in self._nodes:
            with node.client(decode_responses=True) as client:
                info = _cluster_info(client)
            if any(info.get(field) != value for field, value in expected.items()):
                return False
        return True

    def client(self, **kwargs: Any) -> RedisCluster:
        """A cluster client bootstrapped from every node (``kwargs`` go to RedisCluster)."""
        nodes = [ClusterNode(HOST, port) for port in self.ports]
        return RedisCluster(startup_nodes=nodes, **kwargs)

    def node_client(self, port: int, **kwargs: Any) -> redis.Redis:
        """A plain client of one node (no redirections followed)."""
        return self._node(port).client(**kwargs)

    def port_for_slot(self, slot: int) -> int:
        """The port of the master that owns ``slot``, as the first live node sees it."""
        live = next(node for node in self._nodes if node.alive)
        with live.client() as client:
            for first, last, master, *_replicas in client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return int(master[1])
        raise LookupError(f"slot {slot} is not assigned")

    def other_master(self, port: int) -> int:
        """A master of the cluster other than the one on ``port``."""
        return next(each for each in self.ports if each != port)

    def kill(self, port: int) -> None:
        """SIGKILL the master on ``port``; its slots stay assigned to it, unserved."""
        self._node(port).stop()

    def close(self) -> None:
        """Kill every node and remove their directories."""
        for node in self._nodes:
            node.close()

    def _node(self, port: int) -> RedisProcess:
        for node in self._nodes:
            if node.port == port:
                return node
        raise ValueError(f"no node of this cluster listens on port {port} (ports {self.ports})")


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    """CLUSTER INFO as a dict (``client`` decodes responses)."""
    text = str(client.execute_command("CLUSTER", "INFO"))
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


def migrate_slot(
    cluster: ClusterProcesses,
    slot: int,
    source_port: int,
    target_port: int,
    *,
    keys_per_batch: int = 100,
    hold: float = 0.0,
    batch_pause: float = 0.0,
    migrating: threading.Event | None = None,
    timeout: float = 5.0,
) -> int:
    """Move ``slot`` and its keys from the master on ``source_port`` to the one on
    ``target_port``, step by step as ``redis-cli --cluster reshard`` does; return how many
    keys moved.

    The target is set IMPORTING and the source MIGRATING; ``migrating`` (if given) is set;
    the slot is then held half-moved for ``hold`` seconds (the source still serves the keys
    it has and answers ASK for the others). Keys move ``keys_per_batch`` at a time with
    MIGRATE, ``batch_pause`` seconds apart; finally every master of ``cluster`` is told the
    target owns the slot.
    Run it in a thread to keep working on the slot while it is in migration.
    """
    if keys_per_batch < 1:
        raise ValueError(f"keys_per_batch must be at least 1, not {keys_per_batch}")
    others = [port for port in cluster.ports if port not in (source_port, target_port)]
    with redis.Redis(HOST, source_port) as source, redis.Redis(HOST, target_port) as target:
        source_id = _myid(source)
        target_id = _myid(target)
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        if migrating is not None:
            migrating.set()
        time.sleep(hold)
        moved = _move_keys(source, slot, target_port, keys_per_batch, batch_pause, timeout)
        target.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    for port in others:
        try:
            with redis.Redis(HOST, port) as other:
                other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        except redis.ConnectionError:
            pass  # a dead master learns the new owner by gossip, if it ever returns
    return moved


def _move_keys(
    source: redis.Redis,
    slot: int,
    target_port: int,
    keys_per_batch: int,
    batch_pause: float,
    timeout: float,
) -> int:
    moved = 0
    while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, keys_per_batch):
        if moved:
            time.sleep(batch_pause)
        timeout_ms = int(timeout * 1000)
        source.execute_command("MIGRATE", HOST, target_port, "", 0, timeout_ms, "KEYS", *keys)
        moved += len(keys)
    return moved


def _myid(client: redis.Redis) -> str:
    node_id = client.execute_command("CLUSTER", "MYID")
    return node_id.decode() if isinstance(node_id, bytes) else str(node_id)


class SentinelGroup:
    """One master, one replica of it, and one sentinel watching them as ``service``.

    The sentinel (quorum 1) declares the master down after one second without answers
    and promotes the replica; ``kill_master`` and ``wait_for_failover`` drive that.
    """

    def __init__(self, binary: str, service: str = "qrlmaster") -> None:
        self.service = service
        self._servers = [RedisProcess(binary, role="sentinel-data") for _ in range(2)]
        self._sentinel = RedisProcess(binary, role="sentinel")
        self.sentinel_port = self._sentinel.port
        self.url = f"redis+sentinel://{HOST}:{self.sentinel_port}/{service}/0"

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        """Start master and replica, wait for the replica's sync, then start the sentinel
        and return once it names the master and knows the replica."""
        master, replica = self._servers
        try:
            for server in self._servers:
                # a full sync starts at once, not after the 5 s diskless-sync delay
                server.start([*server.args(), "--repl-diskless-sync-delay", "0"])
            with replica.client() as client:
                client.replicaof(HOST, master.port)
            wait_until(lambda: _link_up(replica), timeout, every=0.05)
            self._sentinel.start([str(self._write_config(master.port)), "--sentinel"])
            wait_until(lambda: self._watching(master.port, replica.port), timeout, every=0.05)
        except (AssertionError, RuntimeError, redis.RedisError) as exc:
            servers = [*self._servers, self._sentinel]
            logs = "\n".join(server.tail() for server in servers)
            self.close()
            ports = [server.port for server in servers]
            raise RuntimeError(f"Redis Sentinel group on ports {ports}: {exc}\n{logs}") from exc
        except BaseException:  # an interrupted start leaves no server behind either
            self.close()
            raise
        return self

    def _write_config(self, master_port: int) -> Path:
        name = self.service
        path = self._sentinel.dir / "sentinel.conf"  # the sentinel rewrites it: writable
        path.write_text(
            f"port {self.sentinel_port}\nbind {HOST}\n"
            f"dir {self._sentinel.dir}\nlogfile {self._sentinel.log}\n"
            f"sentinel monitor {name} {HOST} {master_port} 1\n"
            f"sentinel down-after-milliseconds {name} 1000\n"
            f"sentinel failover-timeout {name} 5000\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
        return path

    def _watching(self, master_port: int, replica_port: int) -> bool:
        return self.master_port() == master_port and replica_port in self.replica_ports()

    def _sentinel_client(self) -> redis.Redis:
        return self._sentinel.client(decode_responses=True, socket_timeout=1)

    def master_port(self) -> int | None:
        """The master's port as the sentinel names it now (None: it names none)."""
        with self._sentinel_client() as client:
            address = client.sentinel_get_master_addr_by_name(self.service)
        return int(address[1]) if address else None

    def replica_ports(self) -> list[int]:
        """The ports of the replicas the sentinel has heard from and holds in sync (the
        ones it could promote)."""
        with self._sentinel_client() as client:
            replicas = client.sentinel_slaves(self.service)
        return [int(r["port"]) for r in replicas if r["flags"] == "slave" and _synced(r)]

    def wait_for_replica(self, timeout: float = 10.0) -> None:
        """Return once the replica has applied every write the master had taken when called.

        ``WAIT`` cannot prove that from another connection: it counts the replicas holding
        *that connection's* writes, and a fresh one has written nothing.
        """
        port = self.master_port()
        master = next(server for server in self._servers if server.port == port)
        replica = next(server for server in self._servers if server.port != port)
        with master.client(decode_responses=True) as client:
            taken = int(client.info("replication")["master_repl_offset"])

        def applied() -> bool:
            with replica.client(decode_responses=True) as client:
                return int(client.info("replication").get("slave_repl_offset", -1)) >= taken

        wait_until(applied, timeout, every=0.05)

    def kill_master(self) -> int:
        """SIGKILL the process the sentinel names master now; return its port."""
        port = self.master_port()
        server = next((server for server in self._servers if server.port == port), None)
        if server is None:
            raise RuntimeError(f"the sentinel names port {port} master: not one of ours")
        server.stop()
        return server.port

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until the failover away from ``old_port`` is over, and return the new
        master's port.

        Over means the sentinel's own record of the master (SENTINEL MASTER) has the new
        address with no down or failover flags. Earlier, GET-MASTER-ADDR-BY-NAME already
        names the promoted replica while that record still has the dead master, flagged
        down; redis-py's ``Sentinel`` reads the record and raises MasterNotFoundError.
        """

        def promoted() -> int | None:
            with self._sentinel_client() as client:
                state = client.sentinel_master(self.service)
            port = int(state["port"])
            return port if port != old_port and state["flags"] == "master" else None

        return int(wait_until(promoted, timeout, every=0.1))

    def client(self, **kwargs: Any) -> redis.Redis:
        """A client of the current master, found through the sentinel (``kwargs`` go to
        ``master_for``)."""
        sentinel = Sentinel([(HOST, self.sentinel_port)], socket_timeout=1)
        client: redis.Redis = sentinel.master_for(self.service, **{"socket_timeout": 1, **kwargs})
        return client

    def close(self) -> None:
        """Kill the sentinel and both servers and remove their directories."""
        for server in [self._sentinel, *self._servers]:
            server.close()


def _synced(replica: dict[str, Any]) -> bool:
    return bool(replica.get("master-link-status") == "ok")


def _link_up(replica: RedisProcess) -> bool:
    with replica.client(decode_responses=True) as client:
        return bool(client.info("replication").get("master_link_status") == "up")
