"""Hostile inputs to the crawler: a sitemap gzip bomb (peak memory of a real crawl process), and
the address guard's IPv6 embeddings, legacy IPv4 spellings and names resolving to private
addresses, all recorded as `refused: ...`."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import polars as pl
import pytest
from aiohttp import web

from pipeline.dataset import Dataset
from pipeline.fetch import CrawlSource, Options, run
from pipeline.fetch.crawl import gunzip_at_most
from pipeline.fetch.urls import UrlError, check_url_address, is_public_address, literal_ip
from pipeline.localsite import BackgroundSite

REPO = Path(__file__).resolve().parents[2]


def gzip_bomb(prefix: bytes, chunks: int, chunk_bytes: int = 1 << 24) -> bytes:
    """A valid one-member gzip of PREFIX and CHUNKS x CHUNK_BYTES spaces, about 1000 times
    smaller than what it inflates to. Built from one deflated chunk repeated (a full flush
    resets the deflate state, so every chunk deflates to the same bytes): 2 GiB of spaces
    cost a second here, not the minute of compressing them."""
    def deflated(data: bytes) -> bytes:
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        return deflater.compress(data) + deflater.flush(zlib.Z_FULL_FLUSH)

    spaces = b" " * chunk_bytes
    crc = zlib.crc32(prefix)
    for _ in range(chunks):
        crc = zlib.crc32(spaces, crc)
    size = len(prefix) + chunks * chunk_bytes
    body = deflated(prefix) + deflated(spaces) * chunks + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + struct.pack("<II", crc, size & 0xFFFFFFFF)


class BombSite(BackgroundSite):
    """robots.txt names /sitemap.xml.gz: 2 MB of gzip that inflates to 2 GiB (a sitemap listing
    /found.html, then spaces)."""

    def __init__(self, bomb_chunks: int = 128):
        super().__init__(start_timeout=10)
        self.bomb_chunks = bomb_chunks
        self.bomb = b""
        self.hits: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        if request.path == "/robots.txt":
            return web.Response(text=f"User-agent: *\nAllow: /\nSitemap: {self.url}/sitemap.xml.gz\n")
        if request.path == "/sitemap.xml.gz":
            return web.Response(body=self.bomb, content_type="application/gzip")
        if request.path in ("/", "/found.html"):
            return web.Response(text=f"<html><title>{request.path}</title>ok</html>", content_type="text/html")
        raise web.HTTPNotFound()

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        return app

    def __enter__(self):
        site = super().__enter__()
        prefix = (f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                  f"<url><loc>{self.url}/found.html</loc></url>").encode()
        self.bomb = gzip_bomb(prefix, self.bomb_chunks)
        return site


def test_gunzip_at_most_stops_at_the_cap():
    bomb = gzip_bomb(b"<urlset>", 4, 1 << 20)
    assert zlib.decompress(bomb, 16 + zlib.MAX_WBITS) == b"<urlset>" + b" " * (4 << 20)  # valid gzip
    assert gunzip_at_most(bomb, 1000) == b"<urlset>" + b" " * 992
    assert gunzip_at_most(b"\x1f\x8bnot gzip at all", 1000) is None


CRAWL_AND_REPORT_PEAK_RSS = """
import json, sys
from pipeline.fetch import CrawlSource, Options, run
from pipeline.dataset import Dataset
source = CrawlSource(seeds=[sys.argv[1] + "/"], sitemaps=True, max_depth=0, max_bytes=3_000_000,
                     allow_private=True, timeout=30)
result = run([], sys.argv[2], Options(sources=[source]), None)
urls = sorted(Dataset(sys.argv[2]).scan().collect()["url"].to_list())
# VmHWM: this process image's own peak (ru_maxrss would carry the forking parent's peak over)
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss_mib": peak_kib / 1024,
                  "urls": urls, "sources": result.details["sources"]}))
"""


def test_sitemap_gzip_bomb_costs_max_bytes_not_its_inflated_size(tmp_path):
    """Issue #17 item 2: 2 MB of sitemap with max_bytes 3 MB peaked at 4.35 GB RSS."""
    with BombSite() as site:
        assert len(site.bomb) < 2_200_000  # a 2 MB file that inflates to 2 GiB
        done = subprocess.run([sys.executable, "-c", CRAWL_AND_REPORT_PEAK_RSS, site.url, str(tmp_path / "raw")],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]
        assert site.hits["/sitemap.xml.gz"] == 1
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # the sitemap's first 3 MB were read: the page it lists was found and fetched
    assert report["urls"] == [site.url + "/", site.url + "/found.html"]
    # the whole crawl process (interpreter, polars, pyarrow, aiohttp) stays far below the 2 GiB
    # the bomb inflates to; the old code peaked above 2 GiB here
    assert report["peak_rss_mib"] < 400, report


# -- the address guard ----------------------------------------------------------------------
@pytest.mark.parametrize(("address", "public"), [
    ("::127.0.0.1", False), ("::10.0.0.1", False), ("::8.8.8.8", True),            # IPv4-compatible
    ("::ffff:169.254.169.254", False), ("::ffff:8.8.8.8", True),                  # IPv4-mapped
    ("64:ff9b::127.0.0.1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::8.8.8.8", True),  # NAT64
    ("64:ff9b:1::8.8.8.8", False),                                                 # local-use NAT64
    ("2002:7f00:1::", False), ("2002:c0a8:101::1", False), ("2002:808:808::1", True),  # 6to4
    ("fec0::1", False), ("feff::1", False),                                        # site-local
    ("::", False), ("::1", False),
])
def test_ipv6_forms_are_judged_by_the_address_they_lead_to(address, public):
    assert is_public_address(address) is public


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.0.0.1", "0x7F.1"])
def test_legacy_ipv4_spellings_are_literals(host):
    assert literal_ip(host) == "127.0.0.1"
    with pytest.raises(UrlError, match=rf"^refused: {host.lower()} \(127\.0\.0\.1\) is a private"):
        check_url_address(f"http://{host}:8080/", allow_private=False)


def test_names_are_not_taken_for_legacy_literals():
    assert literal_ip("example.com") is None and literal_ip("0xdeadbeef.example") is None
    assert literal_ip("134744072") == "8.8.8.8"


class PlainSite(BackgroundSite):
    def __init__(self):
        super().__init__(start_timeout=10)
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text="<html>ok</html>", content_type="text/html")

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        return app


def test_refused_hosts_are_recorded_as_refused_not_as_robots(tmp_path, local_engine):
    """Issue #17 item 12: decimal/hex/octal IPs and names resolving to a private address were
    recorded as "disallowed by robots.txt" (robots.txt's fetch was refused first)."""
    name = socket.gethostname()
    resolved = socket.gethostbyname(name)
    assert not is_public_address(resolved), f"this test needs a host name resolving privately; {name} → {resolved}"
    with PlainSite() as site:
        port = site.port
        seeds = [f"http://2130706433:{port}/", f"http://0x7f.1:{port}/a", f"http://0177.0.0.1:{port}/b",
                 f"http://{name}:{port}/c", f"http://[::127.0.0.1]:{port}/d", f"http://[::ffff:7f00:1]:{port}/e"]
        sources = [CrawlSource(seeds=[seed], name=f"s{i}", timeout=5, retries=0) for i, seed in enumerate(seeds)]
        result = run([], tmp_path / "raw", Options(sources=sources), local_engine)
        assert site.hits == 0
    frame = Dataset(tmp_path / "raw").scan().collect().sort("source")
    errors = frame["error"].to_list()
    assert frame.height == 6 and all(e.startswith("refused: ") for e in errors), errors
    assert errors[0] == "refused: 2130706433 (127.0.0.1) is a private/loopback/link-local address (use --allow-private)"
    assert errors[3] == f"refused: {name.lower()} resolves to non-public address {resolved} (use --allow-private)"
    assert frame.filter(pl.col("error").str.contains("robots")).height == 0
    counts = [result.details["sources"][key] for key in sorted(result.details["sources"])]
    assert all(c.get("refused") == 1 and "robots_disallowed" not in c for c in counts), counts
