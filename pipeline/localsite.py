"""An aiohttp application served on 127.0.0.1 from a background thread, as a context manager.

The demo's documentation site and the tests' websites are built on it: a subclass says what to
serve in `make_app`, and `with Site() as site:` gives `site.url` while the calling thread goes
on (crawling it, say).
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod

from aiohttp import web


class BackgroundSite(ABC):
    """Serves `make_app()` on 127.0.0.1:`port` (0 = any free port; a taken fixed port falls back
    to a free one) until the `with` block ends. `.url` is the base URL, `.port` the real port."""

    def __init__(self, port: int = 0, start_timeout: float = 30.0):
        self.port = port
        self.start_timeout = start_timeout
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    def make_app(self) -> web.Application:
        """The application to serve (called in the server thread)."""

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        runner = web.AppRunner(self.make_app(), access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        try:
            loop.run_until_complete(site.start())
        except OSError:  # the fixed port is taken: any free one will do
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def __enter__(self):
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise RuntimeError(f"{type(self).__name__} did not start within {self.start_timeout:.0f} s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
