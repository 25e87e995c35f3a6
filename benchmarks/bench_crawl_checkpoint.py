"""Crawl checkpoint cost: the journal (append what changed) against the snapshot it replaced.

A crawl of N pages checkpoints every `checkpoint_pages` (500) pages. The snapshot wrote every
stored URL and the whole frontier each time (quadratic in N); the journal appends one line
with what the last 500 pages added. No network: the URLs are synthetic, the state classes the
real ones. The old class is loaded from git (`git show REV:pipeline/fetch/crawl.py`).

    .venv/bin/python benchmarks/bench_crawl_checkpoint.py --pages 20000,100000 --old-rev 0f5b248
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.fetch.crawl import CrawlState

REPO = Path(__file__).resolve().parents[1]


def old_state_class(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:pipeline/fetch/crawl.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "crawl_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("crawl_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["crawl_old"] = module
    spec.loader.exec_module(module)
    return module.CrawlState


def simulate(pages: int, every: int, root: Path, journal: bool, old_cls) -> tuple[float, int]:
    """N pages, each linking 3 new URLs (the frontier grows as in a breadth-first crawl).
    Returns the seconds spent and the bytes written over the whole crawl."""
    state = CrawlState(root / "t.jsonl") if journal else old_cls(root / "t.json.gz")
    started = time.perf_counter()
    stored: list[str] = []
    claimed = written = 0
    for page in range(pages):
        for _ in range(3):
            url, claimed = f"https://example.org/section/{claimed // 1000}/page-{claimed}.html", claimed + 1
            if journal:
                state.claim(url, 2)
            else:
                state.depth[url] = 2
        stored.append(f"https://example.org/section/{page // 1000}/page-{page}.html")
        if len(stored) == every:
            state.pages = page + 1
            if journal:
                state.save(stored, [f"t-{page:08d}"])
            else:
                state.stored.update(stored)
                state.tasks.append(f"t-{page:08d}")
                state.save()
                written += state.path.stat().st_size  # the snapshot is rewritten whole
            stored = []
    seconds = time.perf_counter() - started
    return seconds, written if not journal else state.path.stat().st_size  # appended once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", default="20000,100000", help="crawl sizes, comma-separated")
    parser.add_argument("--checkpoint-pages", type=int, default=500)
    parser.add_argument("--old-rev", default="0f5b248", help="a commit with the snapshot CrawlState")
    args = parser.parse_args()
    old_cls = old_state_class(args.old_rev)
    print(f"{'pages':>8} {'snapshot s':>11} {'journal s':>10} {'ratio':>7} {'snapshot MB written':>20} {'journal MB written':>19} {'load s':>7}")
    for pages in [int(p) for p in args.pages.split(",")]:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            old_s, old_size = simulate(pages, args.checkpoint_pages, Path(a), False, old_cls)
            new_s, new_size = simulate(pages, args.checkpoint_pages, Path(b), True, old_cls)
            started = time.perf_counter()
            loaded = CrawlState.load(Path(b) / "t.jsonl")
            load_s = time.perf_counter() - started
            assert len(loaded.stored) == pages // args.checkpoint_pages * args.checkpoint_pages
        print(f"{pages:>8} {old_s:>11.2f} {new_s:>10.2f} {old_s / new_s:>6.1f}x {old_size / 1e6:>20.1f} "
              f"{new_size / 1e6:>19.1f} {load_s:>7.2f}")


if __name__ == "__main__":
    main()
