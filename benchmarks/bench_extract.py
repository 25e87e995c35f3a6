"""Main-content extraction: pipeline.extract against trafilatura on WCXB-dev and the ScrapingHub set.

    .venv/bin/python benchmarks/bench_extract.py [--limit N] [--data DIR]

Prints word-level precision / recall / F1 (the definition in shared/data/README.md) per page
type for both extractors side by side, and pages/s of each measured in the same run on the same
bytes (CPU time of this process, so other load on the machine does not skew the ratio; wall
time is printed too). Both get the raw, still encoded HTML bytes and the URL. Pages whose
reference text is empty (19 of WCXB's 1,495) are left out: there is nothing to score.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extract_evaluate import load_aeb, load_wcxb, word_prf  # noqa: E402

from pipeline.extract import extract_html  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("PIPELINE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def ours(page) -> str:
    return extract_html(page.html, page.url)["text"]


def trafilatura_text(page) -> str:
    import trafilatura

    return trafilatura.extract(page.html, url=page.url) or ""


def run(name: str, fn, pages) -> tuple[dict[str, list[tuple[float, float, float]]], float, float]:
    scores: dict[str, list] = defaultdict(list)
    cpu, wall = time.process_time(), time.perf_counter()
    texts = [fn(page) for page in pages]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for page, text in zip(pages, texts, strict=True):
        scores[page.page_type].append(word_prf(text, page.reference))
    return scores, cpu, wall


def mean(values: list[tuple[float, float, float]], i: int) -> float:
    return sum(v[i] for v in values) / len(values) if values else float("nan")


def report(dataset: str, pages, results) -> None:
    (ours_scores, ours_cpu, ours_wall), (peer_scores, peer_cpu, peer_wall) = results
    print(f"\n## {dataset}: {len(pages)} pages")
    print(f"{'page type':<14} {'n':>5}   {'pipeline P / R / F1':>22}   {'trafilatura P / R / F1':>24}   {'ΔF1':>6}")
    rows = sorted(ours_scores) + ["ALL"]
    for kind in rows:
        a = [s for v in ours_scores.values() for s in v] if kind == "ALL" else ours_scores[kind]
        b = [s for v in peer_scores.values() for s in v] if kind == "ALL" else peer_scores[kind]
        print(f"{kind:<14} {len(a):>5}   {mean(a, 0):.3f} / {mean(a, 1):.3f} / {mean(a, 2):.3f}"
              f"     {mean(b, 0):.3f} / {mean(b, 1):.3f} / {mean(b, 2):.3f}     {mean(a, 2) - mean(b, 2):+.3f}")
    n = len(pages)
    print(f"speed (CPU): pipeline {n / ours_cpu:7.1f} pages/s   trafilatura {n / peer_cpu:7.1f} pages/s"
          f"   ratio {peer_cpu / ours_cpu:.2f}x")
    print(f"speed (wall): pipeline {n / ours_wall:7.1f} pages/s   trafilatura {n / peer_wall:7.1f} pages/s"
          f"   ratio {peer_wall / ours_wall:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--limit", type=int, default=None, help="first N pages of each set")
    args = parser.parse_args()
    root = args.data / "extraction"
    if not root.is_dir():
        sys.exit(f"benchmark data missing: {root}")
    import trafilatura

    print(f"trafilatura {trafilatura.__version__}, pipeline.extract; pages/s over the same bytes")
    for dataset, pages in (("wcxb-dev", list(load_wcxb(root / "wcxb-dev", args.limit))),
                           ("aeb", list(load_aeb(root / "aeb", args.limit)))):
        results = [run("pipeline", ours, pages), run("trafilatura", trafilatura_text, pages)]
        report(dataset, pages, results)


if __name__ == "__main__":
    main()
