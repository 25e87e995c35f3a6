"""Split benchmark: `pipeline split` against scikit-learn's train_test_split, 1x..Nx the corpus.

The corpus is the real rotten_tomatoes set (13,905 labelled texts, three imbalanced classes)
repeated N times with fresh ids, in shards of 20,000 rows (output shards: 20,000 rows too). Each run happens in a child process;
peak memory is the child's own maximum resident set (ru_maxrss; the pipeline runs in-process
with --workers 0 so that one number covers every pass). The peer is the usual in-memory recipe:
pandas reads every shard, train_test_split twice with stratify= (80/10/10), write three Parquet
files. It prints seconds, peak MB and the worst per-class quota deviation of both, and ratios; then a
group split (reviews grouped by movie) against scikit-learn's StratifiedGroupKFold (10 folds:
8 train, 1 val, 1 test), comparing the worst per-class deviation from the 80/10/10 quotas.

    .venv/bin/python benchmarks/bench_split.py                 # scales 2,8,32
    .venv/bin/python benchmarks/bench_split.py --scales 1,2    # a quick look
"""

from __future__ import annotations

import argparse
import bz2
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "labelled" / "rotten_tomatoes.csv.bz2"
SHARD_ROWS = 20_000

PIPELINE_CHILD = """
import resource, sys, time
from pathlib import Path
from pipeline import split
from pipeline.engine import Engine
started = time.perf_counter()
result = split.run([Path(sys.argv[1])], Path(sys.argv[2]), split.Options(stratify="label", shard_rows=20_000),
                   Engine(workers=0, progress=False))
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

SKLEARN_CHILD = """
import resource, sys, time, glob
from pathlib import Path
import pandas as pd
from sklearn.model_selection import train_test_split
started = time.perf_counter()
frame = pd.concat([pd.read_parquet(p) for p in sorted(glob.glob(sys.argv[1] + "/*.parquet"))])
train, rest = train_test_split(frame, test_size=0.2, stratify=frame["label"], random_state=42)
val, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=42)
out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
for name, part in (("train", train), ("val", val), ("test", test)):
    part.assign(split=name).to_parquet(out / f"{name}.parquet")
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


GROUP_CHILD = """
import sys, time, glob, resource
import numpy as np, pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
started = time.perf_counter()
frame = pd.concat([pd.read_parquet(p) for p in sorted(glob.glob(sys.argv[1] + "/*.parquet"))])
folds = list(StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=42).split(
    frame, frame["label"], frame["near_group"]))
split = np.array(["train"] * len(frame), dtype=object)
split[folds[0][1]] = "val"
split[folds[1][1]] = "test"
frame.assign(split=split).to_parquet(sys.argv[2])
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

GROUP_PIPELINE_CHILD = PIPELINE_CHILD.replace('split.Options(stratify="label"',
                                              'split.Options(stratify="label", group="near_group"')


def build_corpus(root: Path, scale: int) -> tuple[int, float]:
    base = pl.read_csv(bz2.decompress(DATA.read_bytes())).select(
        "text", label=pl.col("category"), movie=pl.col("movie_name"))
    frames = [base.with_columns(id=pl.concat_str(pl.lit(f"c{k}:"), pl.int_range(pl.len()).cast(pl.String)),
                                near_group=pl.concat_str(pl.lit(f"c{k}:"), pl.col("movie")))
              for k in range(scale)]
    corpus = pl.concat(frames).select("id", "text", "label", "near_group")
    root.mkdir(parents=True)
    for i in range(0, corpus.height, SHARD_ROWS):
        corpus.slice(i, SHARD_ROWS).write_parquet(root / f"part-{i // SHARD_ROWS:05d}.parquet")
    return corpus.height, corpus["text"].str.len_bytes().sum() / 2**20


def worst_deviation(files: list[str]) -> float:
    rows = pl.read_parquet(files, columns=["label", "split"])
    totals = dict(rows.group_by("label").len().iter_rows())
    worst = 0.0
    for split, label, n in rows.group_by("split", "label").len().iter_rows():
        share = {"train": 0.8, "val": 0.1, "test": 0.1}[split]
        worst = max(worst, abs(n - totals[label] * share))
    return worst


def child(code: str, *args: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    seconds, peak = out.stdout.split()[-2:]
    return float(seconds), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="2,8,32")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in [int(s) for s in args.scales.split(",")]:
            corpus = Path(tmp) / f"x{scale}"
            rows, mb = build_corpus(corpus, scale)
            ours_s, ours_mb = child(PIPELINE_CHILD, str(corpus), str(Path(tmp) / f"ours{scale}"))
            peer_s, peer_mb = child(SKLEARN_CHILD, str(corpus), str(Path(tmp) / f"peer{scale}"))
            ours_dev = json.loads((Path(tmp) / f"ours{scale}" / "manifest.json").read_text())["summary"]["max_quota_deviation"]
            peer_dev = worst_deviation(sorted(str(p) for p in (Path(tmp) / f"peer{scale}").glob("*.parquet")))
            results.append((scale, rows, mb, ours_s, ours_mb, ours_dev, peer_s, peer_mb, peer_dev))
    print(f"{'scale':>5} {'rows':>9} {'text MB':>8} | {'split s':>8} {'peak MB':>8} {'max dev':>7} | "
          f"{'sklearn s':>9} {'peak MB':>8} {'max dev':>7} | {'time x':>6} {'mem x':>6}")
    for scale, rows, mb, os_, om, od, ps, pm, pd_ in results:
        print(f"{scale:>5} {rows:>9,} {mb:>8.1f} | {os_:>8.2f} {om:>8.0f} {od:>7.2f} | "
              f"{ps:>9.2f} {pm:>8.0f} {pd_:>7.2f} | {os_ / ps:>6.2f} {om / pm:>6.2f}")
    first, last = results[0], results[-1]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "x1"
        rows, _ = build_corpus(corpus, 1)
        ours_s, _ = child(GROUP_PIPELINE_CHILD, str(corpus), str(Path(tmp) / "ours"))
        peer_s, _ = child(GROUP_CHILD, str(corpus), str(Path(tmp) / "peer.parquet"))
        ours_dev = worst_deviation(sorted(str(p) for p in (Path(tmp) / "ours").glob("*/*.parquet")))
        peer_dev = worst_deviation([str(Path(tmp) / "peer.parquet")])
    print(f"group split (movies, {rows:,} rows, 80/10/10): pipeline split max class deviation "
          f"{ours_dev:.1f} rows in {ours_s:.2f}s; sklearn StratifiedGroupKFold(10) folds 8/1/1 "
          f"{peer_dev:.1f} rows in {peer_s:.2f}s")
    print(f"peak memory growth {first[0]}x → {last[0]}x: pipeline split {last[4] / first[4]:.2f}x, "
          f"sklearn {last[7] / first[7]:.2f}x (corpus {last[1] / first[1]:.0f}x)")


if __name__ == "__main__":
    main()
