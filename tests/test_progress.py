"""Live progress (issue #17 item 23): a line at most every `interval` seconds where stderr is not
a terminal (a log file, CI, a pipe), from a real crawl of a slow site and from a stage's shards."""

from __future__ import annotations

import io
import re
import time

from pipeline.engine import Engine
from pipeline.progress import Progress

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] (?P<desc>.+?): (?P<done>[\d,]+)(?:/(?P<total>[\d,]+))? (?P<unit>\w+)s, "
                  r"(?P<rate>[\d.]+)/s, (?P<elapsed>\d+)s(?P<stats>(?:, [\d,]+ \w+)*)$")


class NotATerminal(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_lines_come_at_most_every_interval_and_once_at_the_end():
    stream = NotATerminal()
    with Progress("work", total=40, unit="item", interval=0.1, stats=lambda: {"errors": 2}, stream=stream) as progress:
        assert progress.mode == "lines"
        for _ in range(40):
            time.sleep(0.01)
            progress.update()
    lines = stream.getvalue().splitlines()
    assert 2 <= len(lines) <= 6, lines  # 0.4 s of work at one line per 0.1 s, and the last
    last = LINE.match(lines[-1])
    assert last and last["desc"] == "work" and last["done"] == "40" and last["total"] == "40"
    assert last["stats"] == ", 2 errors" and float(last["rate"]) > 0
    assert "\r" not in stream.getvalue()  # no bar redraws in a log file


def test_a_short_run_stays_quiet_and_off_is_off():
    stream = NotATerminal()
    with Progress("quick", interval=10, stream=stream) as progress:
        progress.update(5)
    with Progress("silent", mode="off", interval=0, stream=stream) as progress:
        progress.update(5)
    assert stream.getvalue() == ""


def slow_square(x: int) -> int:
    time.sleep(0.15)
    return x * x


def test_engine_map_reports_shards_where_stderr_is_not_a_terminal(capsys):
    with Engine(workers=0) as engine:  # progress=None: decided by stderr, which pytest captures
        engine.progress_seconds = 0.2
        assert engine.map(slow_square, list(range(8)), desc="squares") == [x * x for x in range(8)]
    lines = [line for line in capsys.readouterr().err.splitlines() if "squares" in line]
    assert len(lines) >= 2, lines
    matches = [LINE.match(line) for line in lines]
    assert all(m and m["unit"] == "shard" and m["total"] == "8" for m in matches), lines
    assert matches[-1]["done"] == "8"


def test_a_crawl_reports_pages_rate_errors_and_queue(tmp_path, capsys):
    from fetch.fetch_testsite import TestSite

    from pipeline.fetch import CrawlSource, Options, run

    with TestSite(pages=40, latency=0.05, extras=False) as site:
        source = CrawlSource(seeds=[site.url + "/"], allow_private=True, per_host=2, concurrency=2,
                             progress_seconds=0.3, timeout=10)
        result = run([], tmp_path / "raw", Options(sources=[source]), None)
    lines = [m for m in map(LINE.match, capsys.readouterr().err.splitlines()) if m and m["desc"].startswith("crawl ")]
    assert len(lines) >= 2, lines
    assert all(m["unit"] == "page" and re.fullmatch(r", [\d,]+ errors, [\d,]+ queued", m["stats"]) for m in lines)
    assert int(lines[-1]["done"].replace(",", "")) == result.rows_out == 42  # index, 40 pages, /p/3?a=1&b=2
    counts = [int(m["done"].replace(",", "")) for m in lines]
    assert counts == sorted(counts)
