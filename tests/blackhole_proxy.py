"""A loopback TCP proxy in front of redis-server that can black-hole chosen connections.

Black-holed: nothing is forwarded either way and nothing is closed, as when a failover or a
network fault leaves a connection open but dead. The inbox reader's connection is recognised by
the BLMPOP it sends. Used by tests/test_redis_probe.py and bench/bench_probe.py.
"""

from __future__ import annotations

import asyncio


class Link:
    """One proxied connection."""

    def __init__(self) -> None:
        self.reader = False  # it carried a BLMPOP: the inbox reader's connection
        self.held = False  # black-holed: nothing is forwarded either way, nothing is closed
        self.closed = False  # the client closed its end


class BlackHoleProxy:
    """A loopback TCP proxy in front of redis-server that can black-hole chosen connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.links: list[Link] = []
        self.hold_readers = False  # black-hole every new reader connection at its first BLMPOP
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers += [client_writer, up_writer]
            link = Link()
            self.links.append(link)
            await asyncio.gather(
                self._pump(client_reader, up_writer, link, outbound=True),
                self._pump(up_reader, client_writer, link, outbound=False),
            )
        finally:
            client_writer.close()
            self._tasks.discard(task)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: Link, *, outbound: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if outbound and b"BLMPOP" in data:
                    link.reader = True
                    link.held = link.held or self.hold_readers
                if not link.held:
                    sink.write(data)
                    await sink.drain()
        except OSError:
            pass
        finally:
            link.closed = link.closed or outbound
            sink.close()

    def black_hole_reader(self) -> int:
        """Black-hole the inbox reader's connection(s); how many."""
        held = 0
        for link in self.links:
            if link.reader and not link.held:
                link.held = True
                held += 1
        return held

    def readers(self) -> int:
        """Reader connections that are forwarded."""
        return sum(1 for link in self.links if link.reader and not link.held)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        # Closed sockets end every pump (held ones too); wait for them rather than leave tasks behind.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
