"""A TCP proxy for tests, between the engine and Redis, with faults switched on and off live.

    proxy = await TcpProxy("127.0.0.1", redis_port).start()
    settings use proxy.url; then, at any moment:
    proxy.latency = 0.02          # every forwarded chunk waits 20 ms (each direction)
    proxy.blackhole = True        # accept and swallow: nothing is forwarded, nothing answers
    proxy.reset = True            # new connections are reset at once; reset_all() for the rest
    proxy.drop_reply(b"<sha>")    # forward a request holding these bytes, then cut the
                                  # connection before Redis's answer is relayed
    await proxy.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


class _Link:
    """One client connection and its upstream connection to Redis."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client, self.upstream = client, upstream
        self.swallowed = False  # lost bytes in a black hole: the byte stream is broken
        self.doomed = False  # a request went up whose answer must not come back

    def abort(self, rst: bool = False) -> None:
        for writer in (self.client, self.upstream):
            sock = writer.get_extra_info("socket")
            if rst and sock is not None:
                with contextlib.suppress(OSError):  # linger 0: close() sends RST
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class TcpProxy:
    """Listens on a free port of 127.0.0.1 and forwards every connection to host:port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.latency = 0.0  # seconds added to every forwarded chunk, in each direction
        self.reset = False  # reset new connections as soon as they are accepted
        self.dropped = 0  # answers cut off by drop_reply
        self._blackhole = False
        self._drop_on: bytes | None = None
        self._drops_left = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def blackhole(self) -> bool:
        return self._blackhole

    @blackhole.setter
    def blackhole(self, on: bool) -> None:
        """While on, bytes in both directions vanish (connections stay open, unanswered).
        When it ends, the connections that lost bytes are closed: their streams are broken,
        as a TCP connection through a partition that dropped its state would be."""
        self._blackhole = on
        if not on:
            for link in [link for link in self._links if link.swallowed]:
                link.abort()

    def drop_reply(self, marker: bytes, times: int = 1) -> None:
        """The next `times` requests whose bytes contain `marker` reach Redis, and their
        connection is cut as soon as Redis answers, before the answer is relayed (the
        command ran; its answer is lost). The marker is looked for in each chunk read:
        redis-py sends a command, or a pipeline, in one write, so e.g. a script's SHA1 shows
        up whole."""
        self._drop_on, self._drops_left = marker, times

    def reset_all(self) -> None:
        """Reset (RST) every open connection now."""
        for link in list(self._links):
            link.abort(rst=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        if self.reset:
            link.abort(rst=True)
            return
        self._links.add(link)
        try:
            await asyncio.gather(self._pump(link, reader, up_writer, upstream=True),
                                 self._pump(link, up_reader, writer, upstream=False))
        finally:
            self._links.discard(link)
            link.abort()

    def _marks(self, data: bytes) -> bool:
        if self._drop_on is None or self._drops_left <= 0 or self._drop_on not in data:
            return False
        self._drops_left -= 1
        return True

    async def _pump(self, link: _Link, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, upstream: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if self._blackhole:
                    link.swallowed = True
                    continue
                if not upstream and link.doomed:
                    self.dropped += 1  # Redis answered: the command ran; the answer is lost
                    break
                if self.latency:
                    await asyncio.sleep(self.latency)
                if upstream and self._marks(data):
                    link.doomed = True
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.abort()
