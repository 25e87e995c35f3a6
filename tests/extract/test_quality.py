"""Extraction quality floors on the shared benchmark sets (word-level F1, shared/data/README.md).

The default run scores every 4th WCXB page (all 7 page types) and all 181 ScrapingHub articles;
the floors sit a little under what the extractor reaches, so a regression fails loudly. The full
WCXB run (and trafilatura beside it) is benchmarks/bench_extract.py; `-m slow` scores all of it.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from extract_evaluate import load_aeb, load_wcxb, word_prf

from pipeline.extract import extract_html


def mean_f1(pages) -> tuple[float, dict[str, float]]:
    by_type: dict[str, list[float]] = defaultdict(list)
    for page in pages:
        by_type[page.page_type].append(word_prf(extract_html(page.html, page.url)["text"], page.reference)[2])
    every = [f for values in by_type.values() for f in values]
    return sum(every) / len(every), {k: sum(v) / len(v) for k, v in by_type.items()}


def test_word_f1_definition():
    assert word_prf("The cat sat", "the cat sat on the mat") == (1.0, 0.5, 2 / 3)
    assert word_prf("", "words") == (0.0, 0.0, 0.0)
    assert word_prf("a a b", "a b b")[2] == pytest.approx(2 / 3)


def test_wcxb_sample_f1_floor(shared_data):
    pages = list(load_wcxb(shared_data / "extraction" / "wcxb-dev"))[::4]
    assert len(pages) == 369
    f1, by_type = mean_f1(pages)
    assert f1 >= WCXB_SAMPLE_FLOOR, by_type
    assert by_type["article"] >= 0.91 and by_type["documentation"] >= 0.88, by_type


def test_aeb_f1_floor(shared_data):
    pages = list(load_aeb(shared_data / "extraction" / "aeb"))
    assert len(pages) == 181
    f1, _ = mean_f1(pages)
    assert f1 >= 0.90  # reached: 0.929


@pytest.mark.slow
def test_wcxb_full_f1_floor(shared_data):
    f1, by_type = mean_f1(load_wcxb(shared_data / "extraction" / "wcxb-dev"))
    assert f1 >= 0.825, by_type  # reached: 0.845


WCXB_SAMPLE_FLOOR = 0.81  # reached: 0.835 (all of WCXB: 0.845)
