"""A TCP proxy in front of the real Postgres, to make it slow or unreachable on demand.

Used by the outbox tests and benchmarks: the store talks to 127.0.0.1:<proxy port>, the proxy
forwards to 127.0.0.1:5432. ``down()`` closes the listening socket and every live connection
(clients see "connection refused" / "server closed the connection", as when the database host
is gone); ``up()`` listens again on the same port; ``delay`` adds latency to every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432, delay: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self.up()

    def _run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def up(self) -> None:
        async def listen() -> None:
            if self._server is None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

        self._run(listen())

    def down(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            for w in list(self._writers):
                w.close()
            self._writers.clear()

        self._run(close())

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, server_w))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, slow: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
                while chunk := await r.read(65536):
                    if slow and self.delay:
                        await asyncio.sleep(self.delay)
                    w.write(chunk)
                    await w.drain()
            w.close()

        await asyncio.gather(pipe(client_r, server_w, True), pipe(server_r, client_w, False))
        self._writers.discard(client_w)
        self._writers.discard(server_w)
