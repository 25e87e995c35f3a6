"""Crawl and extract a real Sphinx site served on 127.0.0.1; count what extraction leaves.

The site: Debian's Python documentation, unpacked, not installed:
    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    python benchmarks/sphinx_site_measure.py /tmp/pydoc/usr/share/doc/python3.11/html /tmp/sphinx-out \
        [--exclude /whatsnew/ --exclude glob:*/c-api/*] [--raw-from DIR]

Prints the pages crawled (and those the patterns kept out), then over the extracted documents:
how many texts still hold Sphinx's `¶` heading anchors and how many titles keep the
"— Python 3.x documentation" suffix. `--raw-from` re-extracts an earlier crawl (to compare
extractors on the same pages).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import polars as pl
from aiohttp import web

from pipeline import extract
from pipeline.dataset import Dataset
from pipeline.engine import Engine
from pipeline.fetch import CrawlSource, Options, run
from pipeline.localsite import BackgroundSite


class StaticSite(BackgroundSite):
    def __init__(self, root: Path):
        super().__init__(start_timeout=10)
        self.root = root
        self.requests = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        file = (self.root / (request.path.lstrip("/") or "index.html")).resolve()
        if not file.is_file() or self.root not in file.parents:
            raise web.HTTPNotFound()
        return web.FileResponse(file)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--exclude", action="append", default=[])
    parser.add_argument("--include", action="append", default=[])
    parser.add_argument("--raw-from", type=Path, default=None)
    args = parser.parse_args()
    raw = args.raw_from or args.out / "raw"
    if args.raw_from is None:
        patterns = {"exclude": args.exclude, "include": args.include} if args.exclude or args.include else {}
        with StaticSite(args.site.resolve()) as site:
            source = CrawlSource(seeds=[site.url + "/index.html"], allow_private=True, max_pages=5000,
                                 timeout=30, **patterns)
            result = run([], raw, Options(sources=[source]), None)
        counts = next(iter(result.details["sources"].values()))
        print(f"crawl: {counts.get('pages_ok', 0)} pages ok, {counts.get('pages_failed', 0)} failed, "
              f"{counts.get('excluded_by_pattern', 0)} links kept out by patterns {patterns or '(none)'}")
    with Engine(workers=0, progress=False) as engine:
        extract.run([raw], args.out / "docs", extract.Options(), engine, fresh=True)
    docs = Dataset(args.out / "docs").scan().collect()
    suffix = re.compile(r"\s[—-]\s+Python [0-9.]+ documentation$")
    pilcrow = docs.filter(pl.col("text").str.contains("¶", literal=True)).height
    suffixed = sum(1 for t in docs["title"] if t and suffix.search(t))
    print(f"extract: {docs.height} documents; text with ¶: {pilcrow}; titles with the site-name suffix: {suffixed}")
    by_section = docs.with_columns(section=pl.col("url").str.extract(r"//[^/]+/([^/]+)/")).group_by("section").len()
    print("sections:", dict(sorted(by_section.iter_rows(), key=lambda kv: -kv[1])[:12]))


if __name__ == "__main__":
    main()
