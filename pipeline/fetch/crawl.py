"""The crawler: one asyncio loop, one aiohttp session, a breadth-first frontier, checkpoints.

Workers (`concurrency` of them) take URLs from one FIFO queue (breadth first). Each URL is
canonicalised before it is queued and claimed in the seen set, so a page is requested once;
robots.txt is fetched once per host and obeyed; redirects are followed hop by hop (the guard,
robots.txt and the seen set apply to every hop, loops and chains longer than
`max_redirects` are errors). Every outcome is one raw row; failures carry their reason.

Resume: rows are buffered and written as a shard when the buffer reaches the shard size or
`checkpoint_pages` pages; right after each shard the crawl state's changes (URLs stored, URLs
claimed and released with their depths, shards committed) are appended to the journal
`OUTPUT/_crawl/<task>.jsonl`. A killed crawl re-run with the same output and options loads the
state, drops any shard written after it, and continues with the frontier: a stored page is
never fetched again, a page fetched but not yet stored is fetched again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import zlib
from pathlib import Path

import lxml.etree
import lxml.html

from pipeline.dataset import StageOutput, TaskRecord
from pipeline.errors import JobError
from pipeline.fetch.http import HttpClient, Response, media_type
from pipeline.fetch.options import CrawlSource
from pipeline.fetch.robots import Robots
from pipeline.fetch.urls import (
    Scope,
    UrlError,
    UrlPatterns,
    canonical_url,
    check_url_address,
    host_of,
)
from pipeline.fetch.writer import ShardRoller, raw_row
from pipeline.progress import Progress

log = logging.getLogger(__name__)

LINK_XPATH = lxml.etree.XPath("//a/@href|//area/@href")
BASE_XPATH = lxml.etree.XPath("//base/@href")
SITEMAP_TYPES = {"application/xml", "text/xml", "application/x-gzip", "application/gzip", "text/plain", ""}
MAX_SITEMAPS = 50


def extract_links(body: bytes, url: str, cache: dict | None = None, sort_query: bool = True) -> list[str | None]:
    """Every <a href> / <area href> of an HTML page, canonical (resolved against <base>);
    None for links that cannot be fetched. `cache` memoises canonical forms across pages."""
    if not body or not body.strip():
        return []
    try:
        doc = lxml.html.fromstring(body)
    except (lxml.etree.ParserError, ValueError, TypeError):
        return []
    base = url
    bases = BASE_XPATH(doc)
    if bases:
        base = canonical_or_none(str(bases[0]), url, None, sort_query) or url
    cache = {} if cache is None else cache
    return [canonical_or_none(str(href), base, cache, sort_query) for href in LINK_XPATH(doc)]


def canonical_or_none(href: str, base: str, cache: dict | None = None, sort_query: bool = True) -> str | None:
    """canonical_url(href, base), or None for a link that cannot be fetched; memoised.

    Pages of a site repeat the same links, and canonicalising is the crawler's main CPU cost,
    so results are cached by what they depend on: the href alone (absolute URLs), the base's
    origin (root-relative paths) or the whole base (relative paths).
    """
    if href.startswith(("http://", "https://")):
        key = ("", href)
    elif href.startswith("/") and not href.startswith("//"):
        key = (base[: base.find("/", base.find("//") + 2)], href)
    else:
        key = (base, href)
    cache = {} if cache is None else cache
    cached = cache.get(key, _MISSING)
    if cached is not _MISSING:
        return cached
    try:
        result = canonical_url(href, base=base, sort_query=sort_query)
    except (UrlError, ValueError):
        result = None
    if len(cache) > 200_000:
        cache.clear()
    cache[key] = result
    return result


_MISSING = object()


class CrawlState:
    """What survives a kill: stored URLs, the frontier and the shards written so far.

    Kept as a journal, ``_crawl/<task>.jsonl``: each checkpoint appends one line with what
    changed since the previous one (URLs newly stored, claimed and released, shards committed,
    counters), so a checkpoint costs what the last ``checkpoint_pages`` pages added, not the
    whole crawl so far (a snapshot per checkpoint made a long crawl quadratic). Loading
    replays the lines; a line cut short by a kill is cut off the file, and the shards it
    would have listed are redone. The sets themselves are in memory: URLs, not documents.
    """

    def __init__(self, path: Path):
        self.path = path
        self.stored: set[str] = set()  # canonical URLs whose rows are in committed shards
        self.depth: dict[str, int] = {}  # every claimed URL → its depth
        self.tasks: list[str] = []  # committed shard task keys, in order
        self.sequence = 0
        self.pages = 0  # pages counted against max_pages (stored ones)
        self.finished = False
        self._claimed: dict[str, int] = {}  # changes since the last checkpoint
        self._released: set[str] = set()

    def claim(self, url: str, depth: int) -> None:
        self.depth[url] = depth
        self._claimed[url] = depth
        self._released.discard(url)

    def release(self, url: str) -> None:
        """A claimed URL that is neither stored nor pending any more (over max_pages)."""
        if self.depth.pop(url, None) is not None:
            self._claimed.pop(url, None)
            self._released.add(url)  # the last of claim/release since a checkpoint is what counts

    @classmethod
    def load(cls, path: Path) -> CrawlState | None:
        if not path.exists():
            return None
        state = cls(path)
        good = 0
        with path.open("rb") as journal:
            for line in journal:
                try:
                    entry = json.loads(line) if line.endswith(b"\n") else None
                except ValueError:
                    entry = None
                if entry is None:  # the last line, cut short by a kill: its shards are redone
                    break
                state.stored.update(entry["stored"])
                state.depth.update(entry["claimed"])
                for url in entry["released"]:
                    state.depth.pop(url, None)
                state.tasks += entry["tasks"]
                state.sequence, state.pages = int(entry["sequence"]), int(entry["pages"])
                state.finished = bool(entry["finished"])
                good += len(line)
        if good < path.stat().st_size:
            os.truncate(path, good)
        return state

    def save(self, stored: list[str], tasks: list[str]) -> None:
        """Append one checkpoint: `stored` and `tasks` are the ones new since the last."""
        self.stored.update(stored)
        self.tasks += tasks
        entry = {"stored": stored, "claimed": self._claimed, "released": sorted(self._released),
                 "tasks": tasks, "sequence": self.sequence, "pages": self.pages, "finished": self.finished}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as journal:
            journal.write(json.dumps(entry).encode() + b"\n")
            journal.flush()
            os.fsync(journal.fileno())
        self._claimed, self._released = {}, set()

    def frontier(self) -> list[tuple[str, int]]:
        pending = [(url, d) for url, d in self.depth.items() if url not in self.stored]
        pending.sort(key=lambda item: item[1])
        return pending


class Crawler:
    """Crawls one `CrawlSource` into `output` (see the module docstring)."""

    def __init__(self, options: CrawlSource, output: StageOutput, task: str, source: str):

        try:
            seeds = [canonical_url(seed, sort_query=options.sort_query) for seed in options.seeds]
        except UrlError as error:
            raise JobError(f"fetch crawl: bad seed: {error}") from None
        options = options.model_copy(update={"seeds": seeds})
        self.options = options
        self.output = output
        self.task = task
        self.source = source
        self.scope = Scope(options.scope, options.seeds)
        self.patterns = UrlPatterns(options.include, options.exclude)
        self.excluded: set[str] = set()  # links in scope that a pattern kept out (counted once)
        self.accept_types = {t.lower() for t in options.content_types}
        self.state_path = output.outputs["main"] / "_crawl" / f"{task}.jsonl"
        self.robots: dict[str, asyncio.Task[Robots]] = {}
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.unflushed: list[str] = []  # URLs whose rows sit in the roller's buffer
        self.started = 0  # pages counted against max_pages, including those in flight
        self.counts: dict[str, int] = {}
        self.http: HttpClient | None = None
        self.link_cache: dict[tuple[str, str], str | None] = {}  # canonical forms of links seen
        self.progress: Progress | None = None

    # -- resume ---------------------------------------------------------------------------
    def _load_state(self) -> CrawlState:
        state = CrawlState.load(self.state_path)
        if state is None:
            state = CrawlState(self.state_path)
            for seed in self.options.seeds:
                if seed not in state.depth:
                    state.claim(seed, 0)
        # shards committed after the last checkpoint are not in the state: drop them
        known = set(state.tasks)
        prefix = f"{self.task}-"
        for record_path in self.output.progress_dir.glob("*.json"):
            data = json.loads(record_path.read_text())
            if data.get("task", "").startswith(prefix) and data["task"] not in known:
                for shard in data["outputs"].get("main", []):
                    (self.output.outputs["main"] / shard["path"]).unlink(missing_ok=True)
                record_path.unlink()
        return state

    def records(self) -> list[TaskRecord]:
        state = CrawlState.load(self.state_path)
        out = []
        for task in state.tasks if state else []:
            record = self.output.completed(task)
            if record is None:
                raise RuntimeError(f"crawl shard {task} is missing from {self.output.outputs['main']}; rerun with --fresh")
            out.append(record)
        return out

    def _checkpoint(self, finished: bool = False, infos: list | None = None) -> None:
        infos = (infos or []) + self.roller.flush()
        tasks = []
        for info in infos:
            key = f"{self.task}-{info.path.rsplit('-', 1)[-1].removesuffix('.parquet')}"
            record = TaskRecord(task=key, fingerprint="", outputs={"main": [info]},
                                counts={"rows_out": info.rows})
            self.output.commit(record)
            tasks.append(key)
        self.state.sequence = self.roller.sequence
        self.state.pages = self.started
        self.state.finished = finished
        self.state.save(self.unflushed, tasks)
        self.unflushed = []
        self.since_checkpoint = 0

    # -- main -----------------------------------------------------------------------------
    def run(self) -> dict[str, int]:
        """Crawl until the frontier is empty or max_pages is reached; returns counters."""
        self.state = self._load_state()
        if self.state.finished:
            return {"resumed_finished": 1}
        return _run_coroutine(self._crawl())

    async def _crawl(self) -> dict[str, int]:
        opts = self.options
        state = self.state
        self.roller = ShardRoller(self.output, self.source, self.task, opts.shard_bytes, start=state.sequence)
        self.started = state.pages
        self.since_checkpoint = 0
        resumed = len(state.stored)
        async with HttpClient(
            concurrency=opts.concurrency, per_host=opts.per_host, delay=opts.delay,
            timeout=opts.timeout, max_bytes=opts.max_bytes, user_agent=opts.user_agent,
            allow_private=opts.allow_private, retries=opts.retries,
            max_retry_after=opts.max_retry_after,
        ) as http:
            self.http = http
            for url, depth in state.frontier():
                self.queue.put_nowait((url, depth))
            if opts.sitemaps:
                await self._seed_sitemaps()
            workers = [asyncio.create_task(self._worker()) for _ in range(opts.concurrency)]
            self.progress = Progress(f"crawl {self.source}", unit="page", interval=opts.progress_seconds,
                                     stats=self._progress_stats)
            try:
                await self.queue.join()
            finally:
                self.progress.close()
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                for task in self.robots.values():
                    task.cancel()
            self.counts["requests"] = http.requests
        self._checkpoint(finished=True)
        self.counts["resumed_pages"] = resumed
        return self.counts

    async def _worker(self) -> None:
        while True:
            url, depth = await self.queue.get()
            try:
                await self._process(url, depth)
            except Exception as error:  # noqa: BLE001 - one bad page must not stop the crawl
                log.exception("crawl: %s failed", url)
                self._store(url, [url], raw_row(url, self.source, error=f"crawler error: {error!r}"))
            finally:
                self.queue.task_done()

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _progress_stats(self) -> dict[str, int]:
        return {"errors": self.counts.get("pages_failed", 0), "queued": self.queue.qsize()}

    def _store(self, url: str, chain: list[str], row: dict) -> None:
        self.unflushed.extend(chain)
        self.since_checkpoint += 1
        self._count("pages_ok" if row["error"] is None else "pages_failed")
        if self.progress is not None:
            self.progress.update()
        infos = self.roller.add_row(row)
        if infos or self.since_checkpoint >= self.options.checkpoint_pages:
            # the roller flushed on size (or the page budget says so): checkpoint now
            self._checkpoint(infos=infos)

    def _enqueue(self, links: list[str | None], depth: int) -> None:
        depths = self.state.depth
        for link in links:
            if link is None or link in depths or not self.scope.allows(link):
                continue
            if not self.patterns.allows(link):
                if link not in self.excluded:
                    self.excluded.add(link)
                    self._count("excluded_by_pattern")
                continue
            self.state.claim(link, depth)
            self.queue.put_nowait((link, depth))

    async def _robots_for(self, url: str) -> Robots:
        host = host_of(url)
        task = self.robots.get(host)
        if task is None:
            task = self.robots[host] = asyncio.ensure_future(self._fetch_robots(url))
        return await task

    async def _fetch_robots(self, url: str) -> Robots:
        scheme = url.split(":", 1)[0]
        robots_url = f"{scheme}://{host_of(url)}/robots.txt"
        response = await self._get_following(robots_url, accept=lambda t: True)
        self._count("robots_fetched")
        if response.status is None and (response.error or "").startswith("refused:"):
            # the host itself is refused (a name resolving to a private address): its pages get
            # that reason, not "disallowed by robots.txt"
            robots = Robots.disallow_all()
            robots.refused = response.error
        elif response.status is not None and 400 <= response.status < 500:
            robots = Robots.allow_all()
        elif response.body is None or response.status != 200:
            # RFC 9309: an unreachable robots.txt (5xx, network) means "disallow everything"
            robots = Robots.disallow_all()
        else:
            robots = Robots(response.body.decode("utf-8", "replace"))
        delay = robots.crawl_delay(self.options.user_agent)
        if delay:
            self.http.set_host_delay(host_of(url), min(delay, 60.0))
        return robots

    async def _get_following(self, url: str, accept) -> Response:
        """GET with redirects followed (robots.txt and sitemaps only; pages use _process)."""
        for _ in range(self.options.max_redirects + 1):
            response = await self.http.get(url, accept=accept)
            if response.location is None:
                return response
            try:
                url = canonical_url(response.location, base=url, sort_query=self.options.sort_query)
            except UrlError as error:
                response.error = str(error)
                return response
        return response

    async def _process(self, url: str, depth: int) -> None:
        opts = self.options
        chain = [url]
        current = url
        response: Response | None = None
        error: str | None = None
        for hop in range(opts.max_redirects + 1):
            try:
                check_url_address(current, opts.allow_private)
            except UrlError as exc:
                error = str(exc)
                self._count("refused")
                break
            robots = await self._robots_for(current)
            if robots.refused:
                error = robots.refused
                self._count("refused")
                break
            if not robots.allowed(current, opts.user_agent):
                error = "disallowed by robots.txt"
                self._count("robots_disallowed")
                break
            if hop == 0:
                if self.started >= opts.max_pages:
                    self.state.release(url)  # not stored, not pending
                    return
                self.started += 1
            response = await self.http.get(current, accept=self._accept)
            location = response.location
            if location is None:
                break
            try:
                target = canonical_url(location, base=current, sort_query=opts.sort_query)
            except UrlError as exc:
                error = f"bad redirect: {exc}"
                break
            if target in chain:
                error = f"redirect loop: {' -> '.join(chain + [target])}"
                break
            if target in self.state.depth:
                error = f"redirect to an already-seen url {target}"
                break
            if hop == opts.max_redirects:
                error = f"too many redirects (> {opts.max_redirects})"
                break
            self.state.claim(target, depth)
            chain.append(target)
            current = target
        if response is None:  # refused by robots.txt before any request
            self._store(url, chain, raw_row(url, self.source, final_url=current, error=error))
            return
        row = raw_row(
            url, self.source, final_url=current, status=response.status,
            content_type=response.content_type, headers=response.headers_json,
            body=response.body, error=error or response.error,
        )
        links: list[str | None] = []
        if row["error"] is None and response.body and depth < opts.max_depth \
                and media_type(response.content_type) != "text/plain":
            links = extract_links(response.body, current, self.link_cache, opts.sort_query)
        self._store(url, chain, row)
        if links:
            self._enqueue(links, depth + 1)

    def _accept(self, media: str) -> bool:
        return not media or media in self.accept_types

    async def _seed_sitemaps(self) -> None:
        """Queue the URLs listed in each seed host's sitemaps (robots.txt Sitemap: lines)."""
        todo: list[str] = []
        for seed in self.options.seeds:
            robots = await self._robots_for(seed)
            scheme = seed.split(":", 1)[0]
            todo.extend(robots.sitemaps or [f"{scheme}://{host_of(seed)}/sitemap.xml"])
        seen: set[str] = set()
        while todo and len(seen) < MAX_SITEMAPS:
            url = todo.pop(0)
            try:
                url = canonical_url(url)
            except UrlError:
                continue
            if url in seen:
                continue
            seen.add(url)
            response = await self._get_following(url, accept=lambda t: t in SITEMAP_TYPES or t.endswith("xml"))
            if response.body is None or response.status != 200:
                continue
            body = response.body
            if body[:2] == b"\x1f\x8b":
                body = gunzip_at_most(body, self.options.max_bytes)
                if body is None:
                    self._count("sitemap_errors")
                    continue
            try:
                root = lxml.etree.fromstring(body, lxml.etree.XMLParser(recover=True, resolve_entities=False, no_network=True))
            except lxml.etree.XMLSyntaxError:
                continue
            if root is None:
                continue
            locs = [str(t).strip() for t in root.xpath("//*[local-name()='loc']/text()")]
            if root.tag.endswith("sitemapindex"):
                todo.extend(locs)
            else:
                self._count("sitemap_urls")
                self._enqueue([canonical_or_none(u, url, None, self.options.sort_query) for u in locs], 0)


def gunzip_at_most(data: bytes, max_bytes: int) -> bytes | None:
    """The first MAX_BYTES of gzip DATA inflated (None if it is not gzip): inflated a piece at a
    time, so a gzip bomb (2 MB that inflates to GBs) costs about MAX_BYTES of memory, not its
    full size."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        return inflater.decompress(data, max_bytes)
    except zlib.error:
        return None


def _run_coroutine(coro):
    """asyncio.run, or in a fresh thread when this thread already runs a loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def crawl_source(options: CrawlSource, output: StageOutput, task: str, source: str) -> tuple[list[TaskRecord], dict]:
    """Run (or resume) one crawl; returns its shard records and counters."""
    started = time.perf_counter()
    crawler = Crawler(options, output, task, source)
    counts = crawler.run()
    counts["seconds"] = round(time.perf_counter() - started, 3)
    return crawler.records(), counts
