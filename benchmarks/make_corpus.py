"""Build a large document corpus from real text, scaled by resampling with controlled edits.

Base documents are real, human-written text found on this machine and in ../shared/data: the
installed man pages (roff stripped), the Rotten Tomatoes and SMS spam texts, the WCXB and AEB
reference article texts and the SPDX licences. A corpus at scale N holds the base documents
once plus N-1 resampled copies of each, every copy one of:

- ``variant`` (the default kind): every 3rd word replaced by the word at the same position of
  another base document, so every word 5-gram is broken: not a duplicate of anything;
- ``exact`` (fraction ``--exact``): the same text under a new id;
- ``near`` (fraction ``--near``): one word in every 50 replaced, so the 5-gram Jaccard to the
  original stays about 0.8-0.9 (documents of at least 100 words only).

`truth.parquet` lists every injected copy with its kind and the id of its original, so a run's
duplicate counts can be checked: exact duplicates removed = natural exact duplicates of the base
+ injected exact copies. All edits are vectorised Polars expressions; the output is a dataset
(DOC_SCHEMA) of `--shard-rows` rows per shard that `pipeline run` takes as `job.input`.

    python benchmarks/make_corpus.py --output bench-out/corpus-x4 --scale 4
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import time
from pathlib import Path

import polars as pl

from pipeline.dataset import StageOutput, TaskRecord
from pipeline.hashing import doc_id, xxhash64
from pipeline.schema import DOC_SCHEMA

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
MAN_ROOT = Path("/usr/share/man")


def strip_roff(text: pl.Expr) -> pl.Expr:
    """roff source → plain text: macro lines lose their macro, font and escape codes go."""
    return (
        text.str.replace_all(r'(?m)^\.\\".*$', "")  # comments
        .str.replace_all(r"(?m)^\.(?:SH|SS)\s+", "\n")  # headings start a paragraph
        .str.replace_all(r"(?m)^\.(?:PP|LP|P|TP|IP|HP|br|sp|RS|RE|in|ti|nf|fi|ad|na|ne|TH|IX|de|ds|nr|if|ie|el|so|ft|ps|vs|ll|hy|nh|\.)\b[^\n]*$", "")
        .str.replace_all(r"(?m)^\.[A-Za-z]{1,3}\s+", "")  # .B, .I, .BR ... keep their words
        .str.replace_all(r"\\f(?:\[[^\]]*\]|\(..|.)", "")
        .str.replace_all(r"\\\((?:em|en|hy)", "-")
        .str.replace_all(r"\\\(..|\\\[[^\]]*\]|\\[&|^%:~0]", "")
        .str.replace_all(r"\\-", "-")
        .str.replace_all(r"\\e", "\\")
        .str.replace_all(r'"', "")
        .str.replace_all(r"[ \t]+", " ")
        .str.replace_all(r"\n{3,}", "\n\n")
        .str.strip_chars()
    )


def man_pages(limit: int | None) -> pl.DataFrame:
    paths = sorted(p for p in MAN_ROOT.rglob("*.gz") if p.is_file())[:limit]
    texts = []
    for path in paths:  # reading files is I/O; the text work below is vectorised
        try:
            texts.append(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))
        except (OSError, EOFError):
            texts.append("")
    frame = pl.DataFrame({"key": [str(p.relative_to(MAN_ROOT)) for p in paths], "raw": texts})
    return frame.select(
        source=pl.lit("man"),
        key=pl.col("key"),
        title=pl.col("key").str.extract(r"([^/]+)\.gz$"),
        text=strip_roff(pl.col("raw")),
        label=pl.col("key").str.extract(r"(man\d)"),
    )


def shared_texts() -> pl.DataFrame:
    parts = []
    with bz2.open(SHARED / "labelled" / "rotten_tomatoes.csv.bz2", "rb") as handle:
        rt = pl.read_csv(handle.read())
    parts.append(rt.with_row_index("i").select(
        source=pl.lit("rotten_tomatoes"), key=pl.col("i").cast(pl.String), title=pl.col("movie_name"),
        text=pl.col("text"), label=pl.col("category")))
    sms = pl.read_csv(SHARED / "labelled" / "sms_spam.tsv", separator="\t", quote_char=None,
                      new_columns=["label", "text"])
    parts.append(sms.with_row_index("i").select(
        source=pl.lit("sms_spam"), key=pl.col("i").cast(pl.String), title=pl.lit(None, pl.String),
        text=pl.col("text"), label=pl.col("label")))
    wcxb = pl.read_ndjson(SHARED / "extraction" / "wcxb-dev" / "ground-truth.jsonl")
    parts.append(wcxb.select(
        source=pl.lit("wcxb"), key=pl.col("id").cast(pl.String), title=pl.col("title"),
        text=pl.col("main_content"), label=pl.col("page_type")))
    aeb = json.loads((SHARED / "extraction" / "aeb" / "ground-truth.json").read_text())
    parts.append(pl.DataFrame({"key": list(aeb), "text": [v["articleBody"] for v in aeb.values()]}).select(
        source=pl.lit("aeb"), key="key", title=pl.lit(None, pl.String), text="text", label=pl.lit("article")))
    spdx = pl.read_ndjson(SHARED / "neardup" / "spdx_licenses.jsonl")
    parts.append(spdx.select(
        source=pl.lit("spdx"), key=pl.col("id"), title=pl.col("name"), text=pl.col("text"), label=pl.lit("licence")))
    return pl.concat(parts, how="vertical_relaxed")


def base_corpus(man_limit: int | None) -> pl.DataFrame:
    frame = pl.concat([man_pages(man_limit), shared_texts()], how="vertical_relaxed")
    frame = frame.filter(pl.col("text").str.count_matches(r"\w+") >= 5)
    return frame.with_columns(id=doc_id(pl.concat_str("source", pl.lit(":"), "key"))).with_row_index("base")


def copies(base: pl.DataFrame, copy: int, exact: float, near: float, seed: int) -> pl.DataFrame:
    """Copy number `copy` (1..N-1) of every base document, each a variant, exact or near copy."""
    n = base.height
    draw = (xxhash64(pl.concat_str(pl.lit(f"{seed}:{copy}:"), pl.col("id"))) % 1_000_000).cast(pl.Float64) / 1e6
    words = pl.col("text").str.split(" ")
    kind = (
        pl.when(draw < exact).then(pl.lit("exact"))
        .when((draw < exact + near) & (words.list.len() >= 100)).then(pl.lit("near"))
        .otherwise(pl.lit("variant"))
    )
    frame = base.with_columns(kind=kind, partner=((pl.col("base") + copy * 7919 + 1) % n))
    # partner words in long form, joined on (partner, position): no per-word copy of a list
    partner_len = base.select(partner=pl.col("base"), plen=words.list.len())
    partner_words = (
        base.select(partner=pl.col("base"), pw=words)
        .explode("pw")
        .with_columns(ppos=pl.int_range(pl.len()).over("partner"))
    )
    exploded = (
        frame.join(partner_len, on="partner", how="left", maintain_order="left")
        .select("base", "kind", "partner", "plen", w=words)
        .explode("w")
        .with_columns(pos=pl.int_range(pl.len()).over("base"))
        .with_columns(ppos=pl.col("pos") % pl.col("plen").clip(1))
        .join(partner_words.select("partner", "ppos", "pw"), on=["partner", "ppos"], how="left", maintain_order="left")
        .with_columns(
            w=pl.when((pl.col("kind") == "variant") & (pl.col("pos") % 3 == copy % 3) & pl.col("pw").is_not_null())
            .then(pl.col("pw"))
            .when((pl.col("kind") == "near") & (pl.col("pos") % 50 == 25))
            .then(pl.concat_str(pl.col("w"), pl.lit("x")))
            .otherwise(pl.col("w"))
        )
        .group_by("base", maintain_order=True)
        .agg(text=pl.col("w").str.join(" "))
    )
    return frame.drop("text").join(exploded, on="base").select(
        id=doc_id(pl.concat_str(pl.lit(f"copy{copy}:"), pl.col("id"))),
        original=pl.col("id"),
        kind="kind",
        source="source",
        title="title",
        text="text",
        label="label",
    )


def to_docs(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        url=pl.lit(None, pl.String),
        fetched_at=pl.lit(None, DOC_SCHEMA["fetched_at"]),
        meta=pl.lit("{}"),
    ).select(list(DOC_SCHEMA)).cast(DOC_SCHEMA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--scale", type=int, default=1, help="copies of the base corpus (1 = the base alone)")
    parser.add_argument("--exact", type=float, default=0.05, help="share of copies that are exact duplicates")
    parser.add_argument("--near", type=float, default=0.05, help="share of copies that are near duplicates")
    parser.add_argument("--man-limit", type=int, default=None, help="use only this many man pages")
    parser.add_argument("--shard-rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    started = time.perf_counter()
    base = base_corpus(args.man_limit)
    options = {k: str(v) for k, v in vars(args).items() if k != "output"}
    output = StageOutput("make_corpus", options, [], {"main": args.output}, fresh=True)
    records, truth = [], []
    shard = 0
    for copy in range(args.scale):
        frame = base.drop("base").select("id", "source", "title", "text", "label") if copy == 0 else None
        if copy:
            made = copies(base, copy, args.exact, args.near, args.seed)
            truth.append(made.filter(pl.col("kind") != "variant").select("id", "original", "kind"))
            frame = made
        docs = to_docs(frame)
        for start in range(0, docs.height, args.shard_rows):
            info = output.write("main", docs.slice(start, args.shard_rows), f"part-{shard:05d}.parquet")
            records.append(output.commit(TaskRecord(f"shard-{shard}", "", {"main": [info]}, {"rows_out": info.rows})))
            shard += 1
    output.finalize(records)
    truth_frame = pl.concat(truth) if truth else pl.DataFrame(schema={"id": pl.String, "original": pl.String, "kind": pl.String})
    truth_frame.write_parquet(args.output.parent / f"{args.output.name}.truth.parquet")
    rows = sum(r.counts["rows_out"] for r in records)
    size = sum(s.bytes for r in records for s in r.outputs["main"])
    print(f"{args.output}: {rows} documents ({base.height} base x {args.scale}), {size / 2**20:.0f} MiB on disk, "
          f"injected exact={truth_frame.filter(pl.col('kind') == 'exact').height} "
          f"near={truth_frame.filter(pl.col('kind') == 'near').height}, {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
