"""Extraction quality: word-level F1 against reference text, and the two shared benchmark sets.

The metric is the one of /work/shared/data/README.md: lower-case, take `\\w+` tokens, count them
as a multiset; precision and recall come from the multiset overlap and are averaged over pages.
The loaders read WCXB (`extraction/wcxb-dev/`, 7 page types) and the ScrapingHub article
benchmark (`extraction/aeb/`) and yield `Page`s with the raw (still encoded) HTML bytes.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Page:
    """One benchmark page: raw HTML bytes, its URL, the page type and the reference text."""

    id: str
    url: str
    page_type: str
    html: bytes
    reference: str


def word_counts(text: str | None) -> Counter:
    return Counter(_WORD.findall((text or "").lower()))


def word_prf(predicted: str | None, reference: str) -> tuple[float, float, float]:
    """(precision, recall, F1) of the predicted text's words against the reference's."""
    pred, ref = word_counts(predicted), word_counts(reference)
    overlap = sum((pred & ref).values())
    n_pred, n_ref = sum(pred.values()), sum(ref.values())
    if n_pred == 0 and n_ref == 0:
        return 1.0, 1.0, 1.0
    precision = overlap / n_pred if n_pred else 0.0
    recall = overlap / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def load_wcxb(folder: Path, limit: int | None = None) -> Iterator[Page]:
    """WCXB development pages that have a reference (1,495 of 1,497), in id order."""
    text = (folder / "ground-truth.jsonl").read_text(encoding="utf-8")
    # split on "\n" only: str.splitlines would also split at U+2028 inside JSON strings
    rows = [json.loads(line) for line in text.split("\n") if line.strip()]
    rows = [r for r in rows if r.get("main_content")]
    rows.sort(key=lambda r: r["id"])
    for row in rows[:limit]:
        html = gzip.decompress((folder / "html" / f"{row['id']}.html.gz").read_bytes())
        yield Page(row["id"], row["url"], row["page_type"], html, row["main_content"])


def load_aeb(folder: Path, limit: int | None = None) -> Iterator[Page]:
    """ScrapingHub article-extraction-benchmark pages (article bodies), in id order."""
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    for key in sorted(truth)[:limit]:
        html = gzip.decompress((folder / "html" / f"{key}.html.gz").read_bytes())
        yield Page(key, truth[key]["url"], "article", html, truth[key]["articleBody"])
