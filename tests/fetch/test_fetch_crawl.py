"""The crawler against a real website on 127.0.0.1: coverage, politeness, failures, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from fetch_testsite import TestSite

from pipeline.dataset import Dataset
from pipeline.fetch import CrawlSource, Options, run
from pipeline.fetch.crawl import CrawlState

REPO = Path(__file__).resolve().parents[2]


def crawl(site_url: str, output: Path, engine, **overrides) -> tuple[pl.DataFrame, object]:
    # the timeout leaves room for a loaded machine; the slow page takes longer still
    options = dict(seeds=[site_url + "/"], allow_private=True, timeout=2.0, retries=2,
                   max_bytes=1 << 20, per_host=4)
    options.update(overrides)
    result = run([], output, Options(sources=[CrawlSource(**options)]), engine)
    frame = Dataset(output).scan().collect()
    return frame, result


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    """One full crawl of the test site, shared by the assertions below."""
    from pipeline.engine import Engine

    output = tmp_path_factory.mktemp("crawl") / "raw"
    with TestSite(pages=30, slow_seconds=6) as site:
        frame, result = crawl(site.url, output, Engine(workers=0, progress=False))
        yield site, frame, result, output


def by_path(frame: pl.DataFrame, site: TestSite) -> dict[str, dict]:
    return {row["url"].removeprefix(site.url): row for row in frame.iter_rows(named=True)}


def test_every_reachable_allowed_page_is_stored_once(crawled):
    site, frame, result, _ = crawled
    assert frame["url"].n_unique() == frame.height  # no page stored twice
    rows = by_path(frame, site)
    ok = {path for path, row in rows.items() if row["error"] is None}
    expected = {"/", *(f"/p/{n}" for n in range(30)), "/p/3?a=1&b=2", "/private/ok.html",
                "/flaky429", "/flaky503", "/redirect", "/broken.html", "/deep"}
    assert ok == expected
    assert result.rows_out == frame.height
    # same page written differently (fragment, "..", default query order) was requested once
    requested = [path for _, path in site.log]
    assert requested.count("/p/1") == 1 and requested.count("/p/2") == 1
    assert requested.count("/p/3") == 1 and requested.count("/p/3?a=1&b=2") == 1
    assert all(requested.count(f"/p/{n}") == 1 for n in range(30))
    assert rows["/"]["status"] == 200 and b"<ul>" in rows["/"]["body"]
    assert json.loads(rows["/"]["headers"])["Content-Type"].startswith("text/html")
    assert set(frame["source"]) == {site.url.removeprefix("http://").replace(":", "_")}


def test_robots_txt_is_obeyed_and_refusals_recorded(crawled):
    site, frame, _, _ = crawled
    assert site.hits["/robots.txt"] == 1
    assert site.hits["/private/secret.html"] == 0 and site.hits["/file.secret"] == 0
    rows = by_path(frame, site)
    assert rows["/private/secret.html"]["error"] == "disallowed by robots.txt"
    assert rows["/file.secret"]["error"] == "disallowed by robots.txt"
    assert rows["/private/ok.html"]["error"] is None  # the longer Allow wins


def test_failures_are_rows_with_their_reason(crawled):
    site, frame, _, _ = crawled
    rows = by_path(frame, site)
    assert rows["/always503"]["status"] == 503
    assert rows["/always503"]["error"] == "HTTP 503 (gave up after 3 attempts)"
    assert site.hits["/always503"] == 3
    assert rows["/missing"]["error"] == "HTTP 404" and site.hits["/missing"] == 1
    assert rows["/slow"]["error"].startswith("timeout after 2s")
    assert rows["/huge"]["error"].startswith("body too large") and rows["/huge"]["body"] is None
    assert rows["/bomb"]["error"].startswith("body too large")
    assert rows["/image.png"]["error"] == "skipped content type image/png"
    assert rows["/image.png"]["status"] == 200 and rows["/image.png"]["body"] is None
    assert "redirect loop" in rows["/loop1"]["error"]
    assert site.hits["/loop1"] == 1 and site.hits["/loop2"] == 1
    # out-of-scope and non-http links are not followed at all
    assert not any("10.255.255.1" in u or "example.org" in u or u.startswith("mailto") for u in frame["url"])


def test_retries_honour_retry_after_and_503(crawled):
    site, frame, _, _ = crawled
    rows = by_path(frame, site)
    assert rows["/flaky429"]["status"] == 200 and site.hits["/flaky429"] == 2
    times = [t for t, p in site.log if p == "/flaky429"]
    assert times[1] - times[0] >= 0.95  # Retry-After: 1 was waited for
    assert rows["/flaky503"]["status"] == 200 and site.hits["/flaky503"] == 3


def test_redirect_is_followed_and_target_not_fetched_again(crawled):
    site, frame, _, _ = crawled
    rows = by_path(frame, site)
    assert rows["/redirect"]["final_url"] == site.url + "/target"
    assert rows["/redirect"]["status"] == 200 and b"ok /target" in rows["/redirect"]["body"]
    assert site.hits["/target"] == 1 and "/target" not in rows


def test_output_is_a_hive_partitioned_dataset(crawled):
    _, frame, _, output = crawled
    manifest = Dataset(output).manifest()
    assert manifest["rows"] == frame.height
    assert all(s["path"].startswith("source=127.0.0.1_") and "/date=" in s["path"] for s in manifest["shards"])
    assert {"url", "final_url", "status", "content_type", "headers", "body", "fetched_at", "source",
            "error", "date"} == set(frame.columns)


def test_private_addresses_are_refused_by_default(tmp_path, local_engine):
    with TestSite(pages=2) as site:
        frame, _ = crawl(site.url, tmp_path / "raw", local_engine, allow_private=False)
        assert sum(site.hits.values()) == 0  # not even robots.txt was requested
    assert frame.height == 1
    assert frame["error"][0].startswith("refused: 127.0.0.1 is a private/loopback")


def test_max_pages_and_max_depth(tmp_path, local_engine):
    with TestSite(pages=30, latency=0, extras=False) as site:
        frame, _ = crawl(site.url, tmp_path / "a", local_engine, max_pages=5)
        assert frame.filter(pl.col("error").is_null() | (pl.col("error") != "disallowed by robots.txt")).height == 5
        frame, _ = crawl(site.url, tmp_path / "b", local_engine, max_depth=0)
        assert frame["url"].to_list() == [site.url + "/"]


def test_delay_spaces_requests_to_a_host(tmp_path, local_engine):
    with TestSite(pages=6, latency=0, extras=False) as site:
        crawl(site.url, tmp_path / "raw", local_engine, delay=0.2, per_host=4)
        starts = sorted(t for t, _ in site.log)
    assert len(starts) == 1 + 1 + 6 + 1  # robots.txt, the index, six pages, /p/3?a=1&b=2
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # request starts are `delay` apart on the client, though 4 may be in flight; the server
    # sees arrivals with some scheduling jitter, hence the tolerances
    assert starts[-1] - starts[0] >= 0.2 * len(gaps) - 0.05
    assert min(gaps) >= 0.1


def test_sitemaps_seed_pages_no_link_reaches(tmp_path, local_engine):
    with TestSite(pages=3, latency=0) as site:
        frame, result = crawl(site.url, tmp_path / "raw", local_engine, max_depth=0, sitemaps=True)
        assert site.hits["/private/x.html"] == 0
    rows = by_path(frame, site)
    assert set(rows) == {"/", "/orphan.html", "/private/x.html"}
    assert rows["/orphan.html"]["error"] is None
    assert rows["/private/x.html"]["error"] == "disallowed by robots.txt"


def test_second_run_resumes_a_finished_crawl_without_requests(tmp_path, local_engine):
    with TestSite(pages=10, latency=0, extras=False) as site:
        first, _ = crawl(site.url, tmp_path / "raw", local_engine, max_pages=15)
        before = sum(site.hits.values())
        second, _ = crawl(site.url, tmp_path / "raw", local_engine, max_pages=15)
        assert sum(site.hits.values()) == before
    assert sorted(first["url"]) == sorted(second["url"])


def _ok_urls(output: Path) -> list[str]:
    frame = Dataset(output).scan(["url", "error"]).collect()
    return frame.filter(pl.col("error").is_null())["url"].to_list()


def test_killed_crawl_resumes_to_the_same_pages_none_twice(tmp_path, local_engine):
    """Kill -9 a crawl (a separate process, via the CLI) mid-way, re-run it, compare."""
    with TestSite(pages=120, latency=0.03, extras=False) as site:
        reference, _ = crawl(site.url, tmp_path / "reference", local_engine, timeout=5, per_host=2,
                             checkpoint_pages=10)
        site.hits.clear()
        output = tmp_path / "killed"
        command = [sys.executable, "-m", "pipeline", "fetch", "crawl", "--seeds", site.url + "/",
                   "--allow-private", "--timeout", "5", "--retries", "2", "--max-bytes", str(1 << 20),
                   "--per-host", "2", "--checkpoint-pages", "10", "--workers", "0", "--output", str(output)]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        progress = output / "_progress"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if progress.is_dir() and len(list(progress.glob("*.json"))) >= 3:
                break
            time.sleep(0.05)
        assert process.poll() is None, f"crawl ended before it could be killed: {process.stderr.read()}"
        process.send_signal(signal.SIGKILL)
        process.wait()
        # stored = in a shard the last checkpoint lists (a shard written after it is redone)
        state = CrawlState.load(output / "_crawl" / "crawl00.jsonl")
        stored_before = {u for u in state.stored if u.startswith(site.url)}
        assert 20 <= len(stored_before) < reference.height
        hits_before = site.hits.copy()
        resumed, _ = crawl(site.url, output, local_engine, timeout=5, per_host=2, checkpoint_pages=10)
        hits_after = site.hits - hits_before
    assert resumed["url"].n_unique() == resumed.height  # none twice
    assert sorted(resumed["url"]) == sorted(reference["url"])
    assert sorted(_ok_urls(output)) == sorted(_ok_urls(tmp_path / "reference"))
    # a page stored before the kill was never requested again
    again = {u for u in stored_before if hits_after[u.removeprefix(site.url).split("?")[0]]}
    assert again == set()


def test_crawl_state_journal_appends_changes_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "_crawl" / "t.jsonl"
    state = CrawlState(path)
    state.claim("http://a/", 0)
    state.claim("http://a/1", 1)
    state.claim("http://a/2", 1)
    state.pages, state.sequence = 2, 1
    state.save(["http://a/", "http://a/1"], ["t-00000"])
    first_line = path.stat().st_size
    state.release("http://a/2")  # over max_pages: neither stored nor pending
    state.claim("http://a/3", 2)
    state.pages, state.sequence = 3, 2
    state.save(["http://a/3"], ["t-00001"])
    # the second line holds only what changed: it names no URL of the first checkpoint
    second = json.loads(path.read_bytes()[first_line:])
    assert second == {"stored": ["http://a/3"], "claimed": {"http://a/3": 2}, "released": ["http://a/2"],
                      "tasks": ["t-00001"], "sequence": 2, "pages": 3, "finished": False}
    loaded = CrawlState.load(path)
    assert loaded.stored == {"http://a/", "http://a/1", "http://a/3"}
    assert loaded.depth == {"http://a/": 0, "http://a/1": 1, "http://a/3": 2}
    assert (loaded.tasks, loaded.pages, loaded.sequence) == (["t-00000", "t-00001"], 3, 2)
    # a kill mid-append: the torn line is cut off and its checkpoint is not in the state
    whole = path.stat().st_size
    with path.open("ab") as journal:
        journal.write(b'{"stored": ["http://a/4"], "claim')
    torn = CrawlState.load(path)
    assert path.stat().st_size == whole
    assert torn.tasks == ["t-00000", "t-00001"] and "http://a/4" not in torn.stored
    torn.save([], [])  # appends after the cut, and the journal still replays
    assert CrawlState.load(path).tasks == ["t-00000", "t-00001"]


def test_a_url_released_reclaimed_and_released_again_stays_released(tmp_path):
    """Over max_pages a claimed URL is released; another page may link to it again, and it is
    claimed and released once more: the journal must end with it released."""
    path = tmp_path / "t.jsonl"
    state = CrawlState(path)
    state.claim("http://a/x", 1)
    state.save([], [])
    state.release("http://a/x")
    state.claim("http://a/x", 2)
    state.release("http://a/x")
    state.save([], [])
    assert CrawlState.load(path).depth == {}
    state.claim("http://a/x", 3)  # and claimed for good after a release
    state.save([], [])
    assert CrawlState.load(path).depth == {"http://a/x": 3}
