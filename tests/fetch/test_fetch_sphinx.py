"""A real Sphinx site (six pages of the Python 3.11 docs, see sphinx_site/README.md) served on
127.0.0.1: include/exclude URL patterns keep sections out of a crawl, and extraction drops
Sphinx's `¶` heading anchors and the site name from titles (issue #17 item 22)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from aiohttp import web

from pipeline import extract
from pipeline.dataset import Dataset
from pipeline.fetch import CrawlSource, Options, run
from pipeline.fetch.urls import UrlPatterns
from pipeline.localsite import BackgroundSite

SITE = Path(__file__).parent / "sphinx_site"


class SphinxSite(BackgroundSite):
    """Serves sphinx_site/*.html.gz as the HTML pages they were; `/` is index.html."""

    def __init__(self):
        super().__init__(start_timeout=10)
        self.requested: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requested.append(request.path)
        path = request.path.lstrip("/") or "index.html"
        file = SITE / f"{path}.gz"
        if request.path == "/robots.txt" or not file.is_file() or ".." in path:
            raise web.HTTPNotFound()
        return web.Response(body=gzip.decompress(file.read_bytes()), content_type="text/html", charset="utf-8")

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        return app


def crawl(site: SphinxSite, output: Path, **options) -> tuple[pl.DataFrame, dict]:
    source = CrawlSource(seeds=[site.url + "/"], allow_private=True, max_depth=2, timeout=10, **options)
    result = run([], output, Options(sources=[source]), None)
    return Dataset(output).scan().collect(), next(iter(result.details["sources"].values()))


def paths(frame: pl.DataFrame, site: SphinxSite) -> set[str]:
    return {u.removeprefix(site.url) for u in frame["url"]}


def test_exclude_and_include_patterns_keep_sections_out(tmp_path):
    with SphinxSite() as site:
        everything, _ = crawl(site, tmp_path / "all")
        without, counts = crawl(site, tmp_path / "without", exclude=["/whatsnew/", "glob:*/tutorial/*"])
        library, _ = crawl(site, tmp_path / "library", include=[r"/library/[a-z]+\.html$"])
        requested = list(site.requested)
    # the whole crawl reaches every page of the subset (and 404s for the pages not included)
    ok = {p for p, s in zip(everything["url"], everything["status"], strict=True) if s == 200}
    assert {u.removeprefix(site.url) for u in ok} == {
        "/", "/index.html", "/library/index.html", "/library/json.html", "/library/textwrap.html",
        "/whatsnew/index.html", "/tutorial/index.html"}
    assert not any(p.startswith(("/whatsnew/", "/tutorial/")) for p in paths(without, site))
    assert "/library/json.html" in paths(without, site)
    assert counts["excluded_by_pattern"] >= 2
    assert paths(library, site) - {"/"} and all(p.startswith("/library/") for p in paths(library, site) - {"/"})
    assert "/library/index.html" in paths(library, site)
    assert requested.count("/whatsnew/index.html") == 1  # only the unfiltered crawl asked for it


def test_patterns_are_validated_and_matched():
    with pytest.raises(ValueError, match=r"(?s)exclude.*bad pattern '\('"):
        CrawlSource(seeds=["http://example.org/"], exclude=["("])
    patterns = UrlPatterns(include=["glob:*/docs/*"], exclude=["/_modules/", r"releases/\d"])
    assert patterns.allows("https://x.org/docs/intro.html")
    assert not patterns.allows("https://x.org/docs/_modules/django/db.html")
    assert not patterns.allows("https://x.org/docs/releases/3.2.html")
    assert not patterns.allows("https://x.org/blog/")


def test_sphinx_pages_extract_without_pilcrows_or_site_name(tmp_path, local_engine):
    with SphinxSite() as site:
        raw, _ = crawl(site, tmp_path / "raw")
    extract.run([tmp_path / "raw"], tmp_path / "docs", extract.Options(), local_engine)
    docs = Dataset(tmp_path / "docs").scan().collect()
    assert docs.height == 7  # the six pages, the index twice (as / and /index.html)
    assert docs.filter(pl.col("text").str.contains("¶", literal=True)).height == 0  # was 7 of 7
    titles = dict(zip((u.removeprefix(site.url) for u in docs["url"]), docs["title"], strict=True))
    assert titles["/library/json.html"] == "json — JSON encoder and decoder"
    assert titles["/library/textwrap.html"] == "textwrap — Text wrapping and filling"
    assert not any("Python 3.11.2 documentation" in t for t in titles.values()), titles
    json_text = docs.filter(pl.col("url").str.ends_with("/library/json.html"))["text"][0]
    assert json_text.startswith("json — JSON encoder and decoder\n\nJSON (JavaScript Object Notation)")
    assert "Basic Usage\n\n" in json_text
    assert all(json.loads(m)["encoding"] == "utf-8" for m in docs["meta"])
