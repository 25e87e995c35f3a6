"""Benchmark: this crawler against Scrapy on the same loopback site, in one run.

The site (its own process, aiohttp on 127.0.0.1) has PAGES real HTML pages of a few KB, each
linking to 25 others, with LATENCY seconds of server latency per request and a robots.txt
that disallows one folder. Both crawlers start from `/`, obey robots.txt, follow same-host
links, allow 16 requests in flight (16 per host), no delay, and store every page (ours:
Parquet raw shards; Scrapy: a JSON-lines feed of url, status and body). Each crawler runs
ROUNDS times, alternating; the table shows the median pages/s, the median CPU time per page
(ours: this process, including writing Parquet; Scrapy: its process, including start-up) and
the coverage (pages with status 200) of each, and the ratio.

    .venv/bin/python benchmarks/bench_fetch.py [--pages 400] [--latency 0.02] [--rounds 3]

Scrapy is a benchmark-only dependency (the `bench` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WORDS = ("data pipeline crawler shard parquet robots latency frontier canonical redirect "
         "retry backoff schema document label split cluster vector token python asyncio").split()


def serve(pages: int, latency: float, port_queue) -> None:
    """The site: run in a child process so neither crawler shares its CPU time with it."""
    from aiohttp import web

    rng = random.Random(7)
    bodies = {}
    for n in range(pages):
        links = "".join(f'<li><a href="/page/{rng.randrange(pages)}.html">link</a></li>' for _ in range(25))
        text = " ".join(rng.choice(WORDS) for _ in range(600))
        bodies[n] = (f"<!DOCTYPE html><html><head><title>Page {n}</title></head><body>"
                     f"<h1>Page {n}</h1><p>{text}</p><ul>{links}</ul>"
                     f'<a href="/private/{n}.html">private</a></body></html>').encode()
    index = "".join(f'<a href="/page/{n}.html">{n}</a> ' for n in range(0, pages, 7)).encode()

    async def handle(request):
        await asyncio.sleep(latency)
        path = request.path
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nDisallow: /private/\n", content_type="text/plain")
        if path == "/":
            return web.Response(body=b"<html><body>" + index + b"</body></html>", content_type="text/html")
        if path.startswith("/page/") and path.endswith(".html"):
            try:
                return web.Response(body=bodies[int(path[6:-5])], content_type="text/html")
            except (KeyError, ValueError):
                pass
        raise web.HTTPNotFound()

    async def main():
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


SCRAPY_SCRIPT = textwrap.dedent('''
    import json, sys, time
    import scrapy
    from scrapy.crawler import CrawlerProcess
    from scrapy.linkextractors import LinkExtractor

    url, feed = sys.argv[1], sys.argv[2]
    host = url.split("//", 1)[1].split("/", 1)[0].split(":")[0]

    class Site(scrapy.Spider):
        name = "bench"
        start_urls = [url]
        allowed_domains = [host]
        links = LinkExtractor()

        def parse(self, response):
            yield {"url": response.url, "status": response.status, "body": response.text}
            for link in self.links.extract_links(response):
                yield response.follow(link.url, self.parse)

    process = CrawlerProcess(settings={
        "CONCURRENT_REQUESTS": 16, "CONCURRENT_REQUESTS_PER_DOMAIN": 16, "DOWNLOAD_DELAY": 0,
        "ROBOTSTXT_OBEY": True, "LOG_LEVEL": "ERROR", "TELNETCONSOLE_ENABLED": False,
        "COOKIES_ENABLED": False, "RETRY_TIMES": 3, "DOWNLOAD_TIMEOUT": 20,
        "DOWNLOAD_MAXSIZE": 10 << 20, "REDIRECT_MAX_TIMES": 5,
        "FEEDS": {feed: {"format": "jsonlines"}}, "USER_AGENT": "bench",
    })
    process.crawl(Site)
    started = time.perf_counter()
    process.start()
    print(json.dumps({"seconds": time.perf_counter() - started}))
''')


def run_scrapy(url: str, work: Path) -> tuple[float, set[str]]:
    feed = work / "scrapy.jsonl"
    feed.unlink(missing_ok=True)
    script = work / "scrapy_bench.py"
    script.write_text(SCRAPY_SCRIPT)
    out = subprocess.run([sys.executable, str(script), url, str(feed)], capture_output=True, text=True, check=True)
    seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    urls = set()
    for line in feed.read_text().splitlines():
        item = json.loads(line)
        if item["status"] == 200:
            urls.add(item["url"])
    return seconds, urls


def run_ours(url: str, work: Path) -> tuple[float, set[str]]:
    import polars as pl

    from pipeline.dataset import Dataset
    from pipeline.engine import Engine
    from pipeline.fetch import CrawlSource, Options, run

    output = work / "ours"
    shutil.rmtree(output, ignore_errors=True)
    options = Options(sources=[CrawlSource(seeds=[url], allow_private=True, concurrency=16, per_host=16,
                                           delay=0.0, retries=3, timeout=20, max_redirects=5)])
    started = time.perf_counter()
    run([], output, options, Engine(workers=0, progress=False))
    seconds = time.perf_counter() - started
    frame = Dataset(output).scan(["url", "status", "error"]).collect()
    return seconds, set(frame.filter((pl.col("status") == 200) & pl.col("error").is_null())["url"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(args.pages, args.latency, ports), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}/"
    work = Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    results: dict[str, list[float]] = {"pipeline.fetch": [], "scrapy": []}
    cpu: dict[str, list[float]] = {"pipeline.fetch": [], "scrapy": []}
    coverage: dict[str, set[str]] = {}
    try:
        for round_ in range(args.rounds):
            for name, fn in (("pipeline.fetch", run_ours), ("scrapy", run_scrapy)):
                who = resource.RUSAGE_SELF if name == "pipeline.fetch" else resource.RUSAGE_CHILDREN
                before = resource.getrusage(who)
                seconds, urls = fn(url, work)
                after = resource.getrusage(who)
                cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
                results[name].append(seconds)
                coverage[name] = urls
                print(f"round {round_ + 1}: {name:<15} {len(urls)} pages in {seconds:.2f}s", file=sys.stderr)
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)

    ours, theirs = coverage["pipeline.fetch"], coverage["scrapy"]
    print(f"\nsite: {args.pages} pages (+ index), {args.latency * 1000:.0f} ms latency, 16 requests per host, "
          f"{args.rounds} rounds, median shown")
    print(f"{'crawler':<16}{'pages':>7}{'seconds':>9}{'pages/s':>9}{'CPU ms/page':>13}")
    rates = {}
    for name in results:
        seconds = statistics.median(results[name])
        rates[name] = len(coverage[name]) / seconds
        cpu_ms = statistics.median(cpu[name]) * 1000 / max(1, len(coverage[name]))
        print(f"{name:<16}{len(coverage[name]):>7}{seconds:>9.2f}{rates[name]:>9.1f}{cpu_ms:>13.2f}")
    print(f"ratio pipeline.fetch / scrapy: {rates['pipeline.fetch'] / rates['scrapy']:.2f}x pages/s")
    print(f"identical coverage: {ours == theirs} (only ours: {len(ours - theirs)}, only scrapy: {len(theirs - ours)})")


if __name__ == "__main__":
    main()
