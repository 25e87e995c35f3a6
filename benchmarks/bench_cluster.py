"""Clustering quality, time and memory: our out-of-core path against the textbook in-memory recipe.

Corpora (real, labelled, ../shared/data/labelled): Rotten Tomatoes (13,905 texts: fresh, rotten,
plot) and the SMS spam collection (5,574: ham, spam), written as document shards of 1,000 rows.
K = the number of true labels. For each seed the clusters are scored by normalised mutual
information (NMI) against the true labels.

- ours: `pipeline features` (hashing TF-IDF, IDF pass, streaming randomized SVD to 100 dims,
  L2-normalised) then `pipeline cluster` (MiniBatch K-means, partial_fit shard by shard), run
  in-process (workers=0) so the peak memory of one process is the whole story;
- textbook: scikit-learn `TfidfVectorizer(stop_words="english", max_df=0.5, min_df=5)` +
  `KMeans(n_clusters=K, random_state=seed)` on all texts in memory (the recipe of the
  scikit-learn text-clustering example, without its LSA step).

Every (method, corpus, scale) runs in a fresh child process; peak RSS is that process's
ru_maxrss. --scale 4 repeats the corpus four times (new ids) to show how memory grows with
the corpus: ours is bounded by one shard plus the (vocabulary x 110) SVD sketch, the textbook
holds the whole matrix.

    .venv/bin/python benchmarks/bench_cluster.py                 # both corpora, 3 seeds, scale 1 and 4
    .venv/bin/python benchmarks/bench_cluster.py --corpus sms --seeds 1 --scales 1
"""

from __future__ import annotations

import argparse
import bz2
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "labelled"
SHARD_ROWS = 1000


def load_corpus(name: str):
    import polars as pl

    if name == "rt":
        raw = bz2.decompress((DATA / "rotten_tomatoes.csv.bz2").read_bytes())
        return pl.read_csv(raw).select(pl.col("category").alias("true_label"), "text")
    return pl.read_csv(DATA / "sms_spam.tsv", separator="\t", quote_char=None, has_header=True,
                       new_columns=["true_label", "text"])


def write_shards(name: str, scale: int, root: Path) -> Path:
    import polars as pl

    from pipeline.dataset import write_shard
    from pipeline.hashing import doc_id

    base = load_corpus(name)
    frame = pl.concat([base] * scale).with_row_index("row").with_columns(
        id=doc_id(pl.concat_str(pl.lit(f"{name}:"), pl.col("row").cast(pl.String))),
        source=pl.lit(name), url=pl.lit(None, pl.String), fetched_at=pl.lit(None, pl.Datetime("us", "UTC")),
        title=pl.lit(None, pl.String), label=pl.lit(None, pl.String), meta=pl.lit("{}"),
    ).select("id", "source", "url", "fetched_at", "title", "text", "label", "meta", "true_label")
    docs = root / "docs"
    for i in range(0, frame.height, SHARD_ROWS):
        write_shard(frame.slice(i, SHARD_ROWS), docs, f"part-{i // SHARD_ROWS:05d}.parquet")
    return docs


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(docs: Path, k: int, seeds: list[int]) -> dict:
    import polars as pl
    from sklearn.metrics import normalized_mutual_info_score

    import pipeline.cluster as cluster
    import pipeline.features as features
    from pipeline.engine import Engine

    engine = Engine(workers=0, progress=False)
    work = docs.parent
    base = peak_mb()
    started = time.perf_counter()
    features.run([docs], work / "feat", features.Options(), engine)
    feature_seconds = time.perf_counter() - started
    nmis, cluster_seconds = [], []
    for seed in seeds:
        started = time.perf_counter()
        cluster.run([work / "feat"], work / f"cl{seed}", cluster.Options(k=str(k), seed=seed), engine)
        cluster_seconds.append(time.perf_counter() - started)
        out = pl.scan_parquet(str(work / f"cl{seed}" / "*.parquet")).select("true_label", "cluster").collect()
        nmis.append(normalized_mutual_info_score(out["true_label"].to_numpy(), out["cluster"].to_numpy()))
    return {"nmi": nmis, "seconds": feature_seconds + sum(cluster_seconds) / len(seeds),
            "peak_mb": peak_mb(), "base_mb": base}


def run_textbook(docs: Path, k: int, seeds: list[int]) -> dict:
    import polars as pl
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import normalized_mutual_info_score

    base = peak_mb()
    started = time.perf_counter()
    frame = pl.read_parquet(str(docs / "*.parquet"), columns=["text", "true_label"])
    x = TfidfVectorizer(stop_words="english", max_df=0.5, min_df=5).fit_transform(frame["text"].fill_null("").to_list())
    vector_seconds = time.perf_counter() - started
    nmis, cluster_seconds = [], []
    for seed in seeds:
        started = time.perf_counter()
        labels = KMeans(n_clusters=k, random_state=seed).fit_predict(x)
        cluster_seconds.append(time.perf_counter() - started)
        nmis.append(normalized_mutual_info_score(frame["true_label"].to_numpy(), labels))
    return {"nmi": nmis, "seconds": vector_seconds + sum(cluster_seconds) / len(seeds),
            "peak_mb": peak_mb(), "base_mb": base}


def child(args) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import polars as pl
    import sklearn.cluster  # noqa: F401  (imports before the baseline memory reading)

    docs = Path(args.docs)
    k = pl.read_parquet(str(docs / "*.parquet"), columns=["true_label"])["true_label"].n_unique()
    seeds = list(range(args.seeds))
    result = (run_ours if args.method == "ours" else run_textbook)(docs, k, seeds)
    print(json.dumps({"k": k, **result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=["rt", "sms", "all"], default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--docs", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    corpora = ["rt", "sms"] if args.corpus == "all" else [args.corpus]
    rows = []
    for name in corpora:
        for scale in args.scales:
            tmp = Path(tempfile.mkdtemp(prefix=f"bench-cluster-{name}-"))
            try:
                docs = write_shards(name, scale, tmp)
                for method in ("ours", "textbook"):
                    if method == "ours":
                        for leftover in tmp.glob("cl*"):
                            shutil.rmtree(leftover)
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", "--method", method, "--docs", str(docs),
                         "--seeds", str(args.seeds)],
                        check=True, capture_output=True, text=True, cwd=REPO)
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    rows.append({"corpus": name, "scale": scale, "method": method, **result})
                    r = rows[-1]
                    print(f"  {name} x{scale} {method}: NMI {sum(r['nmi']) / len(r['nmi']):.3f} "
                          f"{r['seconds']:.1f}s peak {r['peak_mb']:.0f} MB", file=sys.stderr)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print(f"\n{'corpus':<7}{'scale':>6}{'docs':>8}  {'method':<9}{'K':>3}  {'NMI mean':>9} {'min':>6} {'max':>6}"
          f"  {'seconds':>8}  {'peak MB':>8}  {'+MB over imports':>16}")
    sizes = {"rt": 13905, "sms": 5574}
    for r in rows:
        nmi = r["nmi"]
        print(f"{r['corpus']:<7}{r['scale']:>6}{sizes[r['corpus']] * r['scale']:>8}  {r['method']:<9}{r['k']:>3}  "
              f"{sum(nmi) / len(nmi):>9.3f} {min(nmi):>6.3f} {max(nmi):>6.3f}  {r['seconds']:>8.1f}  "
              f"{r['peak_mb']:>8.0f}  {r['peak_mb'] - r['base_mb']:>16.0f}")
    print("\nratios (ours / textbook):")
    for r in rows:
        if r["method"] != "ours":
            continue
        t = next(x for x in rows if x["method"] == "textbook" and x["corpus"] == r["corpus"] and x["scale"] == r["scale"])
        nmi_o, nmi_t = sum(r["nmi"]) / len(r["nmi"]), sum(t["nmi"]) / len(t["nmi"])
        print(f"  {r['corpus']} x{r['scale']}: NMI {nmi_o:.3f} vs {nmi_t:.3f} ({nmi_o / max(nmi_t, 1e-9):.2f}x), "
              f"time {r['seconds'] / t['seconds']:.2f}x, working memory "
              f"{(r['peak_mb'] - r['base_mb']):.0f} vs {(t['peak_mb'] - t['base_mb']):.0f} MB")


if __name__ == "__main__":
    main()
