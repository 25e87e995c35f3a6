"""Split test data: the labelled real corpora in the document schema, cut into shards."""

from __future__ import annotations

import bz2
from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset import write_shard
from pipeline.hashing import doc_id


def write_docs(docs: pl.DataFrame, root: Path, shards: int) -> Path:
    size = -(-docs.height // shards)
    for i in range(shards):
        write_shard(docs.slice(i * size, size), root, f"part-{i:05d}.parquet")
    return root


def as_docs(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Document-schema columns (id from the row number) plus whatever extra columns frame has."""
    extra = [c for c in frame.columns if c not in ("text", "label", "row")]
    return frame.with_row_index("row").with_columns(
        id=doc_id(pl.concat_str(pl.lit(f"{source}:"), pl.col("row").cast(pl.String))),
        source=pl.lit(source),
        url=pl.lit(None, pl.String),
        # an hour per row, repeating every 500 rows: real ties for the time split
        fetched_at=pl.datetime(2024, 1, 1, time_zone="UTC") + pl.duration(hours=pl.col("row") % 500),
        title=pl.lit(None, pl.String),
        meta=pl.lit("{}"),
    ).select("id", "source", "url", "fetched_at", "title", "text", "label", "meta", *extra)


@pytest.fixture(scope="session")
def rotten_docs(shared_data, tmp_path_factory) -> Path:
    """13,905 reviews and plots, label = category (fresh/rotten/plot), near_group = movie."""
    raw = pl.read_csv(bz2.decompress((shared_data / "labelled" / "rotten_tomatoes.csv.bz2").read_bytes()))
    frame = raw.select("text", label=pl.col("category"), near_group=pl.col("movie_name"))
    return write_docs(as_docs(frame, "rotten"), tmp_path_factory.mktemp("rotten") / "docs", 7)


@pytest.fixture(scope="session")
def sms_docs(shared_data, tmp_path_factory) -> Path:
    """5,574 SMS, label = ham/spam (87/13 %)."""
    raw = pl.read_csv(shared_data / "labelled" / "sms_spam.tsv", separator="\t", quote_char=None,
                      has_header=True, new_columns=["label", "text"])
    return write_docs(as_docs(raw, "sms"), tmp_path_factory.mktemp("sms") / "docs", 6)
