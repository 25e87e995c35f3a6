"""Cluster summaries: per-shard counts on the workers, merged into summary.json and labels.toml.

Top terms come from the sampled rows only (bounded work): each shard counts, per cluster, the
documents containing each word (letters only, 3+ characters, English stop words out, via a
Polars group_by over the exploded tokens). The driver sums the counts and ranks a cluster's
words by ``p_c * ln(p_c / p)``, where ``p_c`` is the share of the cluster's sampled documents
containing the word and ``p`` the share over all sampled documents: frequent in the cluster and
distinctive of it. Each shard reports its 500 most frequent words per cluster, so a word's
count can be an underestimate when it is rare in every shard (which such words are not
top terms anyway). Ties break alphabetically, so the ranking is deterministic.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

import polars as pl
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

WORD = r"\b[^\W\d_]{3,}\b"
STOP = sorted(ENGLISH_STOP_WORDS)
SNIPPET = 200
TERMS_PER_SHARD = 500


def shard_terms(frame: pl.DataFrame, text_column: str) -> list[list]:
    """[[cluster, word, docs]] for the (sampled) rows of a frame with a `cluster` column."""
    if frame.height == 0:
        return []
    words = (
        frame.select("cluster", pl.col(text_column).fill_null("").str.to_lowercase()
                     .str.extract_all(WORD).list.unique().alias("word"))
        .explode("word")
        .drop_nulls("word")
        .filter(~pl.col("word").is_in(STOP))
        .group_by("cluster", "word").len()
        # each shard sends its most frequent words per cluster (bounded summaries)
        .sort("cluster", "len", "word", descending=[False, True, False])
        .group_by("cluster", maintain_order=True).head(TERMS_PER_SHARD)
    )
    return [list(r) for r in words.iter_rows()]


def shard_examples(frame: pl.DataFrame, text_column: str, per_cluster: int) -> list[dict]:
    """The `per_cluster` rows nearest each centre in this shard (ties by id)."""
    has_title = "title" in frame.columns
    rows = (
        frame.sort("cluster", "cluster_distance", "id")
        .group_by("cluster", maintain_order=True).head(per_cluster)
        .select("cluster", "id", (pl.col("title") if has_title else pl.lit(None, pl.String)).alias("title"),
                pl.col(text_column).fill_null("").str.slice(0, SNIPPET).alias("text"),
                pl.col("cluster_distance").round(6).alias("distance"))
    )
    return rows.to_dicts()


def top_terms(term_rows: Iterable[Sequence], sampled: dict[int, int], n_terms: int) -> dict[int, list[str]]:
    """Per cluster, the n_terms most distinctive words (see the module docstring)."""
    per_cluster: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    overall: dict[str, int] = defaultdict(int)
    for cluster, word, n in term_rows:
        per_cluster[int(cluster)][word] += int(n)
        overall[word] += int(n)
    total = max(sum(sampled.values()), 1)
    out: dict[int, list[str]] = {}
    for cluster, counts in per_cluster.items():
        size = max(sampled.get(cluster, 0), 1)
        scored = []
        for word, n in counts.items():
            if n < 2 and size > 5:
                continue
            p_c, p = n / size, overall[word] / total
            scored.append((-(p_c * math.log(p_c / p)) if p_c > p else 0.0, -n, word))
        scored.sort()
        out[cluster] = [w for _, _, w in scored[:n_terms]]
    return out


def default_names(terms: dict[int, list[str]], k: int) -> dict[int, str]:
    """Cluster names from their top 3 terms ("word-word-word"), made unique, "cluster-N" if none."""
    names: dict[int, str] = {}
    seen: set[str] = set()
    for c in range(k):
        name = "-".join(terms.get(c, [])[:3]) or f"cluster-{c}"
        if name in seen:
            name = f"{name}-{c}"
        seen.add(name)
        names[c] = name
    return names


# TOML forbids raw control characters (U+0000-U+001F but tab, and DEL) in a basic string, and
# a surrogate has no UTF-8 form (nor a TOML \u escape): escape the first, replace the second
_TOML_UNSAFE = re.compile(r'["\\\x00-\x08\x0a-\x1f\x7f]|[\ud800-\udfff]')
_TOML_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_escape(match: re.Match) -> str:
    char = match.group()
    if "\ud800" <= char <= "\udfff":
        return "\ufffd"
    return _TOML_SHORT.get(char) or f"\\u{ord(char):04X}"


def _toml_string(value: str) -> str:
    """VALUE as a TOML basic string that tomllib reads back as VALUE (surrogates become U+FFFD)."""
    return '"' + _TOML_UNSAFE.sub(_toml_escape, value) + '"'


def _example(example: dict) -> str:
    text = " ".join(example["text"].split())
    return f"{example['title']} | {text}" if example.get("title") else text


def labels_toml(summary: dict, clusters_path: str) -> str:
    """The editable label map: one [[cluster]] table per cluster (see docs/stages/cluster.md)."""
    clusters_path = _toml_string(clusters_path)[1:-1]  # a comment cannot hold a newline or DEL either
    lines = [
        f"# Label map for the clusters in {clusters_path}.",
        "# Edit `name` (it becomes the `label` of the cluster's rows), then run:",
        f"#   pipeline label --input {clusters_path} --output LABELLED --map THIS_FILE",
        "# Merge clusters by giving them the same name (or `merge_into = ID`); `drop = true`",
        "# moves a cluster's rows to rejected/ (reason cluster_dropped). `size`, `share`, `top_terms` and",
        "# `examples` are there to read and are ignored. A cluster left out keeps no label.",
        "",
    ]
    for c in summary["clusters"]:
        lines += [
            "[[cluster]]",
            f"id = {c['cluster']}",
            f"name = {_toml_string(c['name'])}",
            "drop = false",
            f"size = {c['size']}",
            f"share = {c.get('share', 0.0)}",
            "top_terms = [" + ", ".join(_toml_string(t) for t in c["top_terms"]) + "]",
            "examples = [",
            *[f"  {_toml_string(_example(e))}," for e in c["examples"]],
            "]",
            "",
        ]
    return "\n".join(lines)
