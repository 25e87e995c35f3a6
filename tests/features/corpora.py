"""The labelled corpora of ../shared/data as document datasets (DOC_SCHEMA + `true_label`).

Shared by the features, cluster and label tests. `label` is left null (the stages must not
see the truth); the truth rides along in `true_label`, which every stage carries through.
"""

from __future__ import annotations

import bz2
from pathlib import Path

import polars as pl

from pipeline.dataset import write_shard
from pipeline.hashing import doc_id, xxhash64


def sms_frame(shared_data: Path) -> pl.DataFrame:
    return pl.read_csv(shared_data / "labelled" / "sms_spam.tsv", separator="\t", quote_char=None,
                       has_header=True, new_columns=["true_label", "text"])


def rotten_frame(shared_data: Path) -> pl.DataFrame:
    raw = bz2.decompress((shared_data / "labelled" / "rotten_tomatoes.csv.bz2").read_bytes())
    return pl.read_csv(raw).select(
        pl.col("category").alias("true_label"), "text")


def as_docs(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    return frame.with_row_index("row").with_columns(
        id=doc_id(pl.concat_str(pl.lit(f"{source}:"), pl.col("row").cast(pl.String))),
        source=pl.lit(source),
        url=pl.lit(None, pl.String),
        fetched_at=pl.lit(None, pl.Datetime("us", "UTC")),
        title=pl.lit(None, pl.String),
        label=pl.lit(None, pl.String),
        meta=pl.lit("{}"),
        words=pl.col("text").str.count_matches(r"\w+").cast(pl.Int64),
    ).select("id", "source", "url", "fetched_at", "title", "text", "label", "meta", "true_label", "words")


def write_docs(docs: pl.DataFrame, root: Path, shards: int) -> Path:
    size = -(-docs.height // shards)
    for i in range(shards):
        write_shard(docs.slice(i * size, size), root, f"part-{i:05d}.parquet")
    return root


def five_topics_frame(shared_data: Path, per_topic: int = 300) -> pl.DataFrame:
    """Texts on five clearly different topics, `per_topic` each (the first ones of each file):
    grade-school maths problems, role-play instructions, SMS messages, film reviews and plot
    summaries, software licences. `true_label` names the topic; rows are in no topic's order."""
    import gzip
    import json

    data = shared_data
    maths = [json.loads(line)["question"] for line in
             gzip.decompress((data / "instruct" / "gsm8k_train.jsonl.gz").read_bytes()).decode().splitlines()]
    roleplay = [" ".join(filter(None, (r["instruction"], r["input"]))) for r in
                json.loads(gzip.decompress((data / "instruct" / "gpteacher_roleplay.json.gz").read_bytes()))]
    licences = [json.loads(line)["text"] for line in
                (data / "neardup" / "spdx_licenses.jsonl").read_text().splitlines()]
    texts = {"maths": maths, "roleplay": roleplay, "sms": sms_frame(data)["text"].to_list(),
             "films": rotten_frame(data)["text"].to_list(), "licences": licences}
    frame = pl.concat([pl.DataFrame({"true_label": topic, "text": items[:per_topic]})
                       for topic, items in texts.items()])
    return (frame.with_columns(order=xxhash64(pl.col("text"))).sort("order", "true_label", "text")
            .select("true_label", "text"))
