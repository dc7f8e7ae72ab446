"""The node's network path to the broker, which the rig can cut: a TCP relay on the
station. Nodes are given the relay's address; the gateway talks to the broker directly,
so a cut link is the node's alone (its radio, its street cabinet), not the city's.
"""

from __future__ import annotations

import asyncio
import contextlib


class NodeLink:
    """Relays TCP connections from `listen` to the broker at `target`; runs in the
    station's event loop (every method is a coroutine to run there)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, *self.listen,
                                                      reuse_address=True)

    async def cut(self) -> None:
        """Refuse new connections and break the open ones, as a lost radio link does."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pipes = [asyncio.create_task(_pipe(reader, upstream_writer)),
                 asyncio.create_task(_pipe(upstream_reader, writer))]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
                self._pipes.discard(task)
            for w in (writer, upstream_writer):
                with contextlib.suppress(Exception):
                    w.transport.abort()  # a cut link sends no orderly goodbye


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
