"""The report's figures: matplotlib (Agg) → PNG → base64, so the page embeds them."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MAX_CLASSES = 30
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c", "all": "#555555"}


def to_base64(fig) -> str:
    buffer = io.BytesIO()
    # a fixed date keeps the PNG bytes identical from run to run
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _colour(split: str, index: int) -> str:
    return SPLIT_COLOURS.get(split, f"C{index % 10}")


def length_distribution(hist: dict[str, dict[int, int]], unit: str = "words",
                        title: str = "Length distribution") -> str | None:
    """Documents per length bucket (`unit`, powers of two), one bar series per split (in order)."""
    if not hist:
        return None
    buckets = sorted({b for per in hist.values() for b in per})
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(hist)
    for i, (split, per) in enumerate(hist.items()):
        xs = [buckets.index(b) + i * width for b in buckets]
        ax.bar(xs, [per.get(b, 0) for b in buckets], width=width, label=split, color=_colour(split, i))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(buckets))])
    ax.set_xticklabels([_bucket_label(b) for b in buckets], rotation=45, ha="right", fontsize=8)
    ax.set_xlabel(f"{unit} per document")
    ax.set_ylabel("documents")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return to_base64(fig)


def _bucket_label(bucket: int) -> str:
    low, high = (1 << bucket) - 1, (1 << (bucket + 1)) - 2
    return str(low) if low == high else f"{low}-{high}"


def class_balance(per_split: dict[str, dict[str, int]]) -> str | None:
    """Rows per class, grouped bars per split."""
    if not per_split:
        return None
    totals: dict[str, int] = {}
    for counts in per_split.values():
        for c, n in counts.items():
            totals[c] = totals.get(c, 0) + n
    # many classes: the largest MAX_CLASSES, so the figure stays readable
    classes = sorted(sorted(totals, key=lambda c: (-totals[c], c))[:MAX_CLASSES])
    fig, ax = plt.subplots(figsize=(max(7, 0.25 * len(classes) * len(per_split)), 3.2))
    width = 0.8 / len(per_split)
    for i, (split, counts) in enumerate(per_split.items()):
        xs = [j + i * width for j in range(len(classes))]
        ax.bar(xs, [counts.get(c, 0) for c in classes], width=width, label=split, color=_colour(split, i))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(classes))])
    ax.set_xticklabels([_short(c) for c in classes], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("rows")
    shown = "" if len(classes) == len(totals) else f" (largest {len(classes)} of {len(totals)} classes)"
    ax.set_title("Class balance per split" + shown)
    ax.legend(fontsize=8)
    return to_base64(fig)


def drops_per_rule(drops: list[dict[str, Any]]) -> str | None:
    """Rows dropped per stage and rule, horizontal bars."""
    drops = [d for d in drops if d["rows"] > 0]
    if not drops:
        return None
    drops = sorted(drops, key=lambda d: d["rows"])
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(drops) + 1.2))
    ax.barh([f"{d['stage']}: {_short(d['reason'], 40)}" for d in drops], [d["rows"] for d in drops], color="#d62728")
    ax.set_xlabel("rows dropped")
    ax.set_title("Drops per stage and rule")
    ax.tick_params(axis="y", labelsize=8)
    return to_base64(fig)


def cluster_sizes(sizes: dict[str, int]) -> str | None:
    """Cluster sizes, largest first."""
    if not sizes:
        return None
    items = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:60]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(range(len(items)), [n for _, n in items], color="#9467bd")
    ax.set_xticks(range(len(items)))
    ax.set_xticklabels([_short(k, 12) for k, _ in items], rotation=90, fontsize=7)
    ax.set_xlabel("cluster")
    ax.set_ylabel("rows")
    ax.set_title(f"Cluster sizes ({len(sizes)} clusters)")
    return to_base64(fig)


def similarity_histogram(bins: dict[str, list[int]], edges: list[float]) -> str | None:
    """Duplicates per similarity bin, stacked by kind (exact, near, ...)."""
    if not bins or not any(sum(v) for v in bins.values()):
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = edges[1] - edges[0]
    bottom = [0] * (len(edges) - 1)
    for i, (kind, counts) in enumerate(sorted(bins.items())):
        ax.bar(edges[:-1], counts, width=width, align="edge", bottom=bottom, label=kind, color=f"C{i}",
               edgecolor="white")
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("similarity to the kept document")
    ax.set_ylabel("duplicates")
    ax.set_title("Duplicate similarity")
    ax.legend(fontsize=8)
    return to_base64(fig)


def confusion_matrix(labels: list[str], matrix: list[list[int]]) -> str | None:
    """Counts, rows = true class; at most MAX_CLASSES classes (the most supported) are drawn."""
    if not labels:
        return None
    if len(labels) > MAX_CLASSES:
        keep = sorted(sorted(range(len(labels)), key=lambda i: -sum(matrix[i]))[:MAX_CLASSES])
        labels = [labels[i] for i in keep]
        matrix = [[matrix[i][j] for j in keep] for i in keep]
    size = max(3.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)))
    ax.set_yticks(range(len(labels)))
    ax.set_xticklabels([_short(x, 15) for x in labels], rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels([_short(x, 15) for x in labels], fontsize=8)
    peak = max((max(r) for r in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > peak / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (validation)")
    return to_base64(fig)


def _short(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
