"""A real aiohttp website on 127.0.0.1 with everything a crawler meets: latency, robots.txt,
429 with Retry-After, 503s, redirects and a redirect loop, a slow page, a huge page, a gzip
bomb, an image, broken HTML, and links that are the same page written differently.

It runs in a background thread (its own event loop) and logs every request it serves, so a
test can assert what was requested, how often and when.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections import Counter

from aiohttp import web

from pipeline.localsite import BackgroundSite

ROBOTS = """User-agent: *
Disallow: /private/
Allow: /private/ok.html
Disallow: /*.secret$

User-agent: otherbot
Disallow: /
"""


class TestSite(BackgroundSite):
    """`with TestSite(pages=30) as site:` → `site.url`; `site.hits` counts requests per path."""

    __test__ = False  # not a pytest class

    def __init__(self, pages: int = 30, latency: float = 0.005, slow_seconds: float = 3.0, extras: bool = True):
        super().__init__(start_timeout=10)
        self.pages = pages
        self.extras = extras  # False: the index links the numbered pages only
        # built once here: compressing inside a handler would stall the server's loop
        self.bomb = gzip.compress(b"\0" * (32 << 20), compresslevel=6)
        self.huge = b"<html><body>" + b"x" * (3 << 20) + b"</body></html>"
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.hits: Counter[str] = Counter()
        self.log: list[tuple[float, str]] = []  # (monotonic time, path with query)
        self.flaky: Counter[str] = Counter()

    # -- pages -----------------------------------------------------------------------------
    def page_html(self, n: int) -> str:
        nxt = [(n + 1) % self.pages, (n * 7 + 3) % self.pages]
        links = "".join(f'<a href="/p/{k}">page {k}</a> ' for k in nxt)
        return (f"<!DOCTYPE html><html><head><title>Page {n}</title></head><body><h1>Page {n}</h1>"
                f"<p>Some text of page {n}.</p>{links}</body></html>")

    def index_html(self) -> str:
        port = self.url.rsplit(":", 1)[1]
        links = [
            "/p/0", "/p/1#section", "/x/../p/2", f"http://127.0.0.1:{port}/p/3?b=2&a=1", "/p/3?a=1&b=2",
            "/private/secret.html", "/private/ok.html", "/file.secret", "/flaky429", "/flaky503",
            "/always503", "/redirect", "/loop1", "/slow", "/huge", "/bomb", "/image.png",
            "/broken.html", "/missing", "mailto:someone@example.org", "javascript:void(0)",
            "http://10.255.255.1/elsewhere", "https://example.org/outside",
        ]
        if not self.extras:
            links = links[:5]
        items = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
        return f"<html><head><title>Index</title></head><body><ul>{items}</ul></body></html>"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs
        self.hits[request.path] += 1
        self.log.append((time.monotonic(), path))
        if self.latency:
            await asyncio.sleep(self.latency)
        route = request.path
        html = "text/html"
        if route == "/robots.txt":
            return web.Response(text=ROBOTS, content_type="text/plain")
        if route == "/":
            return web.Response(text=self.index_html(), content_type=html)
        if route.startswith("/p/"):
            try:
                n = int(route[3:])
            except ValueError:
                raise web.HTTPNotFound() from None
            if not 0 <= n < self.pages:
                raise web.HTTPNotFound()
            return web.Response(text=self.page_html(n), content_type=html)
        if route in ("/private/ok.html", "/target", "/after503", "/after429"):
            return web.Response(text=f"<html><title>{route}</title><body>ok {route}</body></html>", content_type=html)
        if route in ("/private/secret.html", "/file.secret"):
            return web.Response(text="<html>secret</html>", content_type=html)
        if route == "/flaky429":
            self.flaky[route] += 1
            if self.flaky[route] == 1:
                return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
            return web.Response(text="<html><title>flaky429</title>recovered</html>", content_type=html)
        if route == "/flaky503":
            self.flaky[route] += 1
            if self.flaky[route] <= 2:
                return web.Response(status=503, text="busy")
            return web.Response(text="<html><title>flaky503</title>recovered</html>", content_type=html)
        if route == "/always503":
            return web.Response(status=503, text="down")
        if route == "/redirect":
            raise web.HTTPMovedPermanently("/target")
        if route == "/loop1":
            raise web.HTTPFound("/loop2")
        if route == "/loop2":
            raise web.HTTPFound("/loop1")
        if route == "/slow":
            await asyncio.sleep(self.slow_seconds)
            return web.Response(text="<html>too late</html>", content_type=html)
        if route == "/huge":
            return web.Response(body=self.huge, content_type=html)
        if route == "/bomb":
            return web.Response(body=self.bomb, headers={"Content-Encoding": "gzip", "Content-Type": html})
        if route == "/image.png":
            return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"\0" * 100, content_type="image/png")
        if route == "/broken.html":
            body = "<html><body><p>unclosed <b>bold <a href='/p/4'>four<div></span><a href=/deep>deep</a><table><tr><td>"
            return web.Response(text=body, content_type=html)
        if route == "/sitemap.xml":
            body = ('<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                    f"<url><loc>{self.url}/orphan.html</loc></url><url><loc>{self.url}/private/x.html</loc></url>"
                    "<url><loc>https://example.org/elsewhere</loc></url></urlset>")
            return web.Response(text=body, content_type="application/xml")
        if route == "/orphan.html":
            return web.Response(text="<html><title>orphan</title>only in the sitemap</html>", content_type=html)
        if route == "/deep":
            return web.Response(text="<html><title>deep</title>found through broken html</html>", content_type=html)
        raise web.HTTPNotFound()

    # -- lifecycle (pipeline.localsite.BackgroundSite serves it) --------------------------
    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        return app
