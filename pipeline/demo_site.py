"""The demo's website: this Python's standard-library documentation, rendered by pydoc and
served on 127.0.0.1 by aiohttp, so `make run` crawls real human-written text with no network.

Pages are rendered on first request (pydoc imports the module) and cached. `/` lists the
modules; each page links to the modules it mentions, so the crawler has a real link graph.
Run it on its own with `python -m pipeline.demo_site` to look at it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pydoc
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from aiohttp import web

from pipeline.localsite import BackgroundSite

# modules with side effects on import (open a browser, print, start Tk) or none on Linux
SKIP = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3",
    "msilib", "winreg", "winsound", "nt", "msvcrt", "ensurepip", "pydoc_data", "xxsubtype",
    "xxlimited", "xxlimited_35", "sre_compile", "sre_constants", "sre_parse",
}


def stdlib_modules(limit: int) -> list[str]:
    names = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in SKIP:
            continue
        if importlib.util.find_spec(name) is None:
            continue
        names.append(name)
    return names[:limit]


def servable(name: str, roots: set[str]) -> bool:
    """A standard-library module the site may import: never a `__main__` (importing one runs
    the program, e.g. `venv.__main__` creates a virtual environment)."""
    parts = name.split(".")
    return parts[0] in roots and "__main__" not in parts and all(p.isidentifier() for p in parts)


def render_module(name: str) -> str | None:
    """pydoc's HTML page for a module, or None if it cannot be imported."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = pydoc.locate(name, forceload=0)
        except (pydoc.ErrorDuringImport, ImportError, SystemExit):
            return None
        if module is None:
            return None
        return pydoc.html.page(pydoc.describe(module), pydoc.html.document(module, name))


class DemoSite(BackgroundSite):
    """Context manager: serves the site from a background thread; `.url` is its base URL."""

    def __init__(self, modules: int = 400, port: int = 0):
        """port 0 takes any free port; a taken fixed port falls back to a free one."""
        super().__init__(port)
        self.modules = stdlib_modules(modules)
        # the index lists public modules; any standard-library module a page links to is served
        self.allowed_roots = set(sys.stdlib_module_names) - SKIP
        self.python_version = ".".join(map(str, sys.version_info[:3]))
        self._cache: dict[str, asyncio.Future] = {}
        self._pool: ProcessPoolExecutor | None = None

    async def _render(self, name: str) -> str | None:
        # pydoc imports the module: done in worker processes (imports are not thread-safe and
        # rendering is CPU work), each page once
        if name not in self._cache:
            loop = asyncio.get_running_loop()
            self._cache[name] = loop.run_in_executor(self._pool, render_module, name)
        return await self._cache[name]

    async def _index(self, request: web.Request) -> web.Response:
        items = "\n".join(f'<li><a href="{m}.html">{m}</a></li>' for m in self.modules)
        body = (f"<!DOCTYPE html><html lang=en><head><title>Python {self.python_version} "
                f"standard library</title></head><body><h1>Python {self.python_version} standard "
                f"library</h1><p>Documentation of {len(self.modules)} modules, rendered by pydoc."
                f"</p><ul>{items}</ul></body></html>")
        return web.Response(text=body, content_type="text/html")

    async def _robots(self, request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nAllow: /\n", content_type="text/plain")

    async def _page(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not servable(name, self.allowed_roots):
            raise web.HTTPNotFound()
        html = await self._render(name)
        if html is None:
            raise web.HTTPNotFound()
        return web.Response(text=html, content_type="text/html")

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/robots.txt", self._robots)
        app.router.add_get("/{name}.html", self._page)
        return app

    def __enter__(self) -> DemoSite:
        self._pool = ProcessPoolExecutor(max(1, min(4, os.cpu_count() or 1)), mp_context=get_context("spawn"))
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


if __name__ == "__main__":
    import time

    with DemoSite() as demo:
        print(f"serving {len(demo.modules)} modules at {demo.url}/ (Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
