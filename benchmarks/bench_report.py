"""Benchmark: the report stage against the usual in-memory profiling with pandas.

The corpus is the SMS spam collection repeated --copies times (unique ids, a split column, two
sources) in --shards Parquet shards. Both sides run in a fresh subprocess so peak memory
(ru_maxrss) is their own:

- pipeline: `pipeline.report.run` (in-process engine; every section, the sample-bounded
  baseline, plots and HTML);
- pandas: `pd.read_parquet` of the whole dataset, then rows/words/chars per split and source,
  class counts per split, null counts and the vocabulary (a subset of what the report computes).

    .venv/bin/python benchmarks/bench_report.py [--copies 20] [--shards 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMS = REPO.parent / "shared" / "data" / "labelled" / "sms_spam.tsv"

PIPELINE_SIDE = """
import resource, sys, time, json
from pathlib import Path
from pipeline.engine import Engine
from pipeline.report import Options, run
started = time.perf_counter()
result = run([Path(sys.argv[1])], Path(sys.argv[2]), Options(), Engine(workers=0, progress=False))
seconds = time.perf_counter() - started
metrics = json.loads((Path(sys.argv[2]) / "metrics.json").read_text())
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": metrics["volume"]["rows"], "words": metrics["volume"]["words"]}))
"""

PANDAS_SIDE = """
import resource, sys, time, json, glob
import pandas as pd
started = time.perf_counter()
frame = pd.read_parquet(sorted(glob.glob(sys.argv[1] + "/*.parquet")))
frame["words"] = frame["text"].str.count(r"\\w+")
frame["chars"] = frame["text"].str.len()
volume = frame.groupby(["split", "source"])[["words", "chars"]].agg(["sum", "count"])
balance = frame.groupby(["split", "label"]).size()
nulls = frame.isna().sum()
vocabulary = frame["text"].str.lower().str.findall(r"\\w+").explode().nunique()
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": len(frame), "words": int(frame["words"].sum())}))
"""


def build_corpus(root: Path, copies: int, shards: int) -> int:
    import polars as pl

    from pipeline.dataset import write_shard

    sms = pl.read_csv(SMS, separator="\t", quote_char=None, has_header=True, new_columns=["label", "text"])
    frame = (pl.concat([sms.with_columns(copy=pl.lit(i)) for i in range(copies)])
             .with_row_index("row")
             .with_columns(id=pl.format("sms-{}", "row"),
                           source=pl.when(pl.col("row") % 3 == 0).then(pl.lit("a")).otherwise(pl.lit("b")),
                           split=pl.when(pl.col("row") % 10 < 8).then(pl.lit("train"))
                           .when(pl.col("row") % 10 == 8).then(pl.lit("val")).otherwise(pl.lit("test")))
             .drop("row", "copy"))
    size = -(-frame.height // shards)
    for i in range(shards):
        write_shard(frame.slice(i * size, size), root, f"part-{i:05d}.parquet")
    return frame.height


def side(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--shards", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        data = Path(tmp) / "splits"
        started = time.perf_counter()
        rows = build_corpus(data, args.copies, args.shards)
        size = sum(p.stat().st_size for p in data.glob("*.parquet"))
        print(f"corpus: {rows:,} rows in {args.shards} shards, {size / 1e6:.1f} MB Parquet "
              f"(built in {time.perf_counter() - started:.1f}s)")
        ours = side(PIPELINE_SIDE, str(data), str(Path(tmp) / "report"))
        peer = side(PANDAS_SIDE, str(data))
    assert ours["rows"] == peer["rows"] == rows, (ours, peer)
    print(f"{'':30} {'seconds':>9} {'peak MB':>9} {'rows':>10} {'words':>11}")
    for name, r in (("pipeline report (all sections)", ours), ("pandas in memory (subset)", peer)):
        print(f"{name:30} {r['seconds']:9.2f} {r['peak_mb']:9.0f} {r['rows']:10,} {r['words']:11,}")
    print(f"ratios pipeline/pandas: time {ours['seconds'] / peer['seconds']:.2f}x, "
          f"peak memory {ours['peak_mb'] / peer['peak_mb']:.2f}x; words agree: {ours['words'] == peer['words']}")


if __name__ == "__main__":
    main()
