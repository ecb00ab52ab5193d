"""A TCP proxy on loopback that can stall: connections are accepted, and while stalled nothing crosses.

Put in front of a real server (the kube-apiserver, moto) to make its API hang without touching it;
TLS passes through untouched. Used by the fault suite (tests/faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.conftest import free_port


class StallProxy:
    """A TCP proxy on 127.0.0.1 in a thread of its own; while stalled, nothing crosses it either way."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.open = asyncio.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.started = threading.Event()
        self.refusing = False  # while True, every connection is closed at once (a failing API)
        self._writers: set[asyncio.StreamWriter] = set()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.open.set()
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.started.set()
        with contextlib.suppress(RuntimeError):
            self.loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        self._writers.add(writer)
        await self.open.wait()  # a stalled API accepts the connection and answers nothing
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                await self.open.wait()
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, ConnectionError):
            writer.close()

    def start(self) -> StallProxy:
        self.thread.start()
        self.started.wait(5)
        return self

    def stall(self) -> None:
        self.loop.call_soon_threadsafe(self.open.clear)

    def resume(self) -> None:
        self.loop.call_soon_threadsafe(self.open.set)

    def refuse(self, refusing: bool = True) -> None:
        """Close every connection and refuse new ones (True), or accept them again (False)."""

        def apply() -> None:
            self.refusing = refusing
            if refusing:
                for writer in list(self._writers):
                    writer.close()
                self._writers.clear()

        self.loop.call_soon_threadsafe(apply)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
