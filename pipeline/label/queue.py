"""The active-learning queue: the rows a person should label next, as a CSV they edit.

Uncertainty sampling by margin (the top class's probability minus the second's; the smallest
first), spread over clusters: each shard keeps its ``n`` smallest-margin candidates per cluster
(a small frame), and the driver takes the first of every cluster, then the second of every
cluster, and so on (ties by margin, then id), so one confusing cluster cannot fill the queue.
The CSV has ``id, text, cluster, guess, confidence, margin, label``; a person fills ``label``
(blank = skipped) and the file is read back as seed labels (``--answers``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.config import ConfigError
from pipeline.dataset import write_bytes_atomic

EXCERPT_CHARS = 300
COLUMNS = ["id", "text", "cluster", "guess", "confidence", "margin", "label"]


def candidates(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    """One shard's queue candidates: the ``n`` smallest-margin rows of each cluster.

    ``frame`` holds the rows the model labelled or abstained on, with `id`, `text`, `cluster`
    (may be null), `_guess`, `_conf`, `_margin`.
    """
    return (frame.select(
        pl.col("id").cast(pl.String),
        pl.col("text").cast(pl.String).fill_null("").str.replace_all(r"\s+", " ").str.strip_chars()
        .str.slice(0, EXCERPT_CHARS).alias("text"),
        pl.col("cluster").cast(pl.Int64).alias("cluster"),
        pl.col("_guess").alias("guess"),
        pl.col("_conf").round(4).alias("confidence"),
        pl.col("_margin").round(4).alias("margin"),
    ).sort("margin", "id").with_columns(_rank=pl.int_range(pl.len()).over("cluster"))
        .filter(pl.col("_rank") < n).drop("_rank"))


def select(parts: list[pl.DataFrame], n: int) -> pl.DataFrame:
    """The queue: round robin over clusters by margin rank, ``n`` rows, empty `label` column."""
    parts = [p for p in parts if p.height]
    if not parts:
        return pl.DataFrame(schema={c: pl.String for c in COLUMNS})
    return (pl.concat(parts).sort("margin", "id")
            .with_columns(_rank=pl.int_range(pl.len()).over("cluster"))
            .sort("_rank", "margin", "id").head(n).drop("_rank")
            .with_columns(label=pl.lit("", pl.String)))


def write(queue: pl.DataFrame, path: Path) -> None:
    """The queue as UTF-8 CSV (every field quoted where needed), written atomically."""
    write_bytes_atomic(Path(path), queue.select(COLUMNS).write_csv().encode())


def read_answers(path: Path) -> pl.DataFrame:
    """id, label of the answered rows of an edited queue (blank labels skipped, first id kept)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--answers {path}: file not found")
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as error:
        raise ConfigError(f"--answers {path}: not a readable CSV ({error})") from None
    missing = {"id", "label"} - set(frame.columns)
    if missing:
        raise ConfigError(f"--answers {path}: missing column(s) {sorted(missing)} (has {frame.columns})")
    return (frame.select(pl.col("id").str.strip_chars(), pl.col("label").str.strip_chars())
            .filter(pl.col("id").is_not_null() & (pl.col("id") != "")
                    & pl.col("label").is_not_null() & (pl.col("label") != ""))
            .unique("id", keep="first", maintain_order=True))
