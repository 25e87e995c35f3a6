"""Clustering quality, time and memory: our out-of-core path against the textbook in-memory recipe.

Corpora (real, labelled; K = the number of true labels; NMI against the true labels):
- `debian`: Debian package descriptions by Section (29 topics, 19,962 texts; the corpus the
  defaults were tuned on) and `man`: this machine's man pages by manual section (6 sections,
  ~3,000 pages; held out: reported, never tuned on) — see benchmarks/topical_corpora.py;
- `rt` (Rotten Tomatoes: fresh / rotten / plot) and `sms` (ham / spam), ../shared/data/labelled:
  regression checks (sentiment and spam, not topics).
Each corpus is written as document shards of 1,000 rows in two layouts: `shuffled` (rows in id
order) and `sorted` (rows grouped by true label, as when a corpus arrives one file per class).

- ours: `pipeline features` defaults then `pipeline cluster --k K --seed S` defaults, in-process
  (workers=0, so one process's peak memory is the whole story);
- textbook: scikit-learn `TfidfVectorizer(stop_words="english", min_df=2, max_df=0.5)` +
  `KMeans(n_clusters=K, random_state=seed)` on all texts in memory (order-independent, so run on
  the shuffled layout only).

Every measurement is a fresh child process; its wall time (interpreter start, imports, reading
the shards, writing the outputs) and CPU seconds (user + system) are taken by the parent, and the
methods alternate corpus by corpus. Peak memory: the child's VmHWM; "working" memory is the
peak over the RSS after the imports. --scales repeats the corpus (new ids) for ours to show its
memory stays flat; the textbook runs at the first scale unless --textbook-scales says otherwise.
Exit status 1 if, on a topical corpus (debian, man) in any layout, our mean NMI over the seeds is
not above the textbook's, or our working memory grows by more than 15 % across the scales.

--k auto: ours only, each seed clustered twice from the same features, with `--k auto` (the
default criterion and range) and with K = the number of true labels; prints the K chosen per
seed, both NMIs and homogeneities and the CPU seconds of each cluster run (the difference: the cost of choosing K). Exit status 1 if, on a topical
corpus, the auto NMI mean is below AUTO_NMI_SHARE of the true-K NMI mean.

    .venv/bin/python benchmarks/bench_cluster.py                       # all corpora, 3 seeds, x1 (~15 min)
    .venv/bin/python benchmarks/bench_cluster.py --corpus debian --scales 1 4 16
    .venv/bin/python benchmarks/bench_cluster.py --corpus sms --seeds 1
    .venv/bin/python benchmarks/bench_cluster.py --k auto --layouts shuffled   # K chosen vs true K (~6 min)

Figures: benchmarks/RESULTS.md (Clustering).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
SHARD_ROWS = 1000
MEMORY_GROWTH = 0.15  # allowed growth of our working memory from the smallest to the largest scale
TOPICAL = ("debian", "man")
AUTO_NMI_SHARE = 0.9  # --k auto: the auto NMI must keep this share of the true-K NMI on topical corpora


def load_corpus(name: str):
    """key, text, true_label of a corpus."""
    import bz2

    import polars as pl

    data = REPO.parent / "shared" / "data" / "labelled"
    if name == "rt":
        raw = bz2.decompress((data / "rotten_tomatoes.csv.bz2").read_bytes())
        frame = pl.read_csv(raw).select(pl.col("category").alias("true_label"), "text")
    elif name == "sms":
        frame = pl.read_csv(data / "sms_spam.tsv", separator="\t", quote_char=None, has_header=True,
                            new_columns=["true_label", "text"])
    else:
        from topical_corpora import CORPORA

        return CORPORA[name]()
    return frame.with_row_index("key").with_columns(pl.col("key").cast(pl.String),
                                                    pl.col("text").fill_null(""))


def write_shards(name: str, scale: int, layout: str, root: Path) -> tuple[Path, int, int]:
    """The corpus as document shards; returns (folder, rows, K)."""
    import polars as pl

    from pipeline.dataset import write_shard
    from pipeline.hashing import doc_id

    base = load_corpus(name)
    frame = pl.concat([base.with_columns(copy=pl.lit(c)) for c in range(scale)]).with_columns(
        id=doc_id(pl.concat_str(pl.lit(f"{name}:"), pl.col("key"), pl.lit(":"), pl.col("copy").cast(pl.String))),
        source=pl.lit(name), url=pl.lit(None, pl.String), fetched_at=pl.lit(None, pl.Datetime("us", "UTC")),
        title=pl.lit(None, pl.String), label=pl.lit(None, pl.String), meta=pl.lit("{}"),
    ).sort(["true_label", "id"] if layout == "sorted" else ["id"]).select(
        "id", "source", "url", "fetched_at", "title", "text", "label", "meta", "true_label")
    docs = root / "docs"
    for i in range(0, frame.height, SHARD_ROWS):
        write_shard(frame.slice(i, SHARD_ROWS), docs, f"part-{i // SHARD_ROWS:05d}.parquet")
    return docs, frame.height, base["true_label"].n_unique()


def peak_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over exec from the parent,
    which has held the whole corpus while writing the shards."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
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
    features.run([docs], work / "feat", features.Options(), engine)
    for seed in seeds:
        cluster.run([work / "feat"], work / f"cl{seed}", cluster.Options(k=str(k), seed=seed), engine)
    peak = peak_mb()  # the pipeline's peak; the scoring below reads every row's label and is not ours
    nmis = []
    for seed in seeds:
        out = pl.scan_parquet(str(work / f"cl{seed}" / "*.parquet")).select(
            pl.col("true_label").rank("dense").cast(pl.Int32), "cluster").collect()
        nmis.append(normalized_mutual_info_score(out["true_label"].to_numpy(), out["cluster"].to_numpy()))
    return {"nmi": nmis, "peak_mb": peak, "base_mb": base}


def run_textbook(docs: Path, k: int, seeds: list[int]) -> dict:
    import polars as pl
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import normalized_mutual_info_score

    base = peak_mb()
    frame = pl.read_parquet(str(docs / "*.parquet"), columns=["text", "true_label"])
    x = TfidfVectorizer(stop_words="english", min_df=2, max_df=0.5).fit_transform(
        frame["text"].fill_null("").to_list())
    truth = frame["true_label"].rank("dense").cast(pl.Int32).to_numpy()
    nmis = [normalized_mutual_info_score(truth, KMeans(n_clusters=k, random_state=seed).fit_predict(x))
            for seed in seeds]
    return {"nmi": nmis, "peak_mb": peak_mb(), "base_mb": base}


def child(args) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import polars  # noqa: F401
    import sklearn.cluster  # noqa: F401  (imports before the baseline memory reading)

    seeds = list(range(args.seeds))
    result = (run_ours if args.method == "ours" else run_textbook)(Path(args.docs), args.child_k, seeds)
    print(json.dumps(result))


def measure(method: str, docs: Path, k: int, seeds: int, extra: tuple[str, ...] = ()) -> dict:
    """Run one child process; wall and CPU seconds of the whole process, from outside."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", "--method", method, "--docs", str(docs),
                          "--seeds", str(seeds), "--child-k", str(k), *extra],
                         check=True, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "seconds": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=["debian", "man", "rt", "sms", "all"], default="all")
    parser.add_argument("--layouts", nargs="+", choices=["shuffled", "sorted"], default=["shuffled", "sorted"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scales", type=int, nargs="+", default=[1])
    parser.add_argument("--textbook-scales", type=int, nargs="+", default=None,
                        help="scales the textbook runs at (default: the first of --scales)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--docs", default="", help=argparse.SUPPRESS)
    parser.add_argument("--k", default="true", choices=["true", "auto"],
                        help="true: cluster with K = the number of true labels (default); auto: compare "
                             "--k auto with the true K")
    parser.add_argument("--k-criterion", choices=["elbow", "silhouette"], default=None,
                        help="with --k auto: the criterion (default: the cluster stage's)")
    parser.add_argument("--k-max", type=int, default=None,
                        help="with --k auto: the top of the K range (default: the cluster stage's)")
    parser.add_argument("--child-k", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_auto(args) if args.method == "ours-auto" else child(args)
        return
    if args.k == "auto":
        auto_main(args)
        return
    corpora = ["debian", "man", "rt", "sms"] if args.corpus == "all" else [args.corpus]
    textbook_scales = args.textbook_scales or args.scales[:1]
    rows = []
    for name in corpora:
        for scale in args.scales:
            for layout in args.layouts:
                methods = ["textbook", "ours"] if layout == "shuffled" and scale in textbook_scales else ["ours"]
                tmp = Path(tempfile.mkdtemp(prefix=f"bench-cluster-{name}-"))
                try:
                    docs, n, k = write_shards(name, scale, layout, tmp)
                    for method in methods:
                        r = {"corpus": name, "scale": scale, "layout": layout, "method": method,
                             "docs": n, "k": k, **measure(method, docs, k, args.seeds)}
                        rows.append(r)
                        print(f"  {name} x{scale} {layout} {method}: NMI {mean(r['nmi']):.3f} "
                              f"{r['seconds']:.1f}s peak {r['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    failures = check(rows)
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        sys.exit(1)
    print("\nOK: on every topical corpus and layout our NMI mean is above the textbook's, memory flat")


def run_auto(docs: Path, k: int, seeds: list[int], auto_options: dict) -> dict:
    """Features once, then per seed `cluster --k auto` and `cluster --k K`: K chosen, both NMIs, CPU
    seconds (not wall: the machine is shared, and a niced run's wall time says little)."""
    import polars as pl
    from sklearn.metrics import homogeneity_score, normalized_mutual_info_score

    import pipeline.cluster as cluster
    import pipeline.features as features
    from pipeline.engine import Engine

    engine = Engine(workers=0, progress=False)
    work = docs.parent
    features.run([docs], work / "feat", features.Options(), engine)
    result: dict[str, list] = {"k_chosen": [], "k_range": [], "nmi_auto": [], "nmi_true_k": [],
                               "homogeneity_auto": [], "homogeneity_true_k": [],
                               "seconds_auto": [], "seconds_true_k": []}
    for seed in seeds:
        for tag, k_option in (("auto", "auto"), ("true_k", str(k))):
            started = time.process_time()
            done = cluster.run([work / "feat"], work / f"cl-{tag}-{seed}",
                               cluster.Options(k=k_option, seed=seed, **(auto_options if tag == "auto" else {})),
                               engine)
            result[f"seconds_{tag}"].append(time.process_time() - started)
            out = pl.read_parquet(str(work / f"cl-{tag}-{seed}" / "*.parquet"), columns=["true_label", "cluster"])
            truth, found = out["true_label"].rank("dense").to_numpy(), out["cluster"].to_numpy()
            result[f"nmi_{tag}"].append(normalized_mutual_info_score(truth, found))
            result[f"homogeneity_{tag}"].append(homogeneity_score(truth, found))
            if tag == "auto":
                result["k_chosen"].append(done.details["k"])
                result["k_range"].append(done.details["k_range"])
    return result


def child_auto(args) -> None:
    auto_options = {key: value for key, value in (("k_criterion", args.k_criterion), ("k_max", args.k_max))
                    if value is not None}
    print(json.dumps(run_auto(Path(args.docs), args.child_k, list(range(args.seeds)), auto_options)))


def auto_main(args) -> None:
    """--k auto: the K chosen and its NMI against the NMI at the true K, per corpus and layout."""
    corpora = ["debian", "man", "rt", "sms"] if args.corpus == "all" else [args.corpus]
    extra = tuple(a for flag, value in (("--k-criterion", args.k_criterion), ("--k-max", args.k_max))
                  if value is not None for a in (flag, str(value)))
    rows = []
    for name in corpora:
        for layout in args.layouts:
            tmp = Path(tempfile.mkdtemp(prefix=f"bench-cluster-auto-{name}-"))
            try:
                docs, n, k = write_shards(name, args.scales[0], layout, tmp)
                r = {"corpus": name, "layout": layout, "docs": n, "k": k,
                     **measure("ours-auto", docs, k, args.seeds, extra)}
                rows.append(r)
                print(f"  {name} {layout}: K {r['k_chosen']} NMI {mean(r['nmi_auto']):.3f} "
                      f"(true K {k}: {mean(r['nmi_true_k']):.3f})", file=sys.stderr, flush=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n--k auto, criterion: {args.k_criterion or 'the default'}, K range: "
          f"{'2-' + str(args.k_max) if args.k_max else 'the default'}")
    print(f"\n{'corpus':<7}{'docs':>7}  {'layout':<9}{'true K':>6}  {'K range':<9}{'K chosen (per seed)':<21}"
          f"{'NMI auto':>9} {'true K':>7}  {'homog. auto':>11} {'true K':>7}  {'CPU s auto':>10} {'true K':>7}")
    failures = []
    for r in rows:
        k_range = "-".join(str(v) for v in r["k_range"][0])
        print(f"{r['corpus']:<7}{r['docs']:>7}  {r['layout']:<9}{r['k']:>6}  {k_range:<9}"
              f"{', '.join(str(v) for v in r['k_chosen']):<21}{mean(r['nmi_auto']):>9.3f} "
              f"{mean(r['nmi_true_k']):>7.3f}  {mean(r['homogeneity_auto']):>11.3f} {mean(r['homogeneity_true_k']):>7.3f}  "
              f"{mean(r['seconds_auto']):>10.1f} {mean(r['seconds_true_k']):>7.1f}")
        if r["corpus"] in TOPICAL and mean(r["nmi_auto"]) < AUTO_NMI_SHARE * mean(r["nmi_true_k"]):
            failures.append(f"{r['corpus']} {r['layout']}: --k auto NMI {mean(r['nmi_auto']):.3f} below "
                            f"{AUTO_NMI_SHARE:.0%} of the true K's {mean(r['nmi_true_k']):.3f}")
    print("(means over the seeds; homogeneity: 1 when every cluster holds one true label, what naming\n"
          " clusters in labels.toml needs; CPU s: one cluster run, auto minus true K = the cost of choosing K)")
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        sys.exit(1)
    print("\nOK: on every topical corpus --k auto keeps at least "
          f"{AUTO_NMI_SHARE:.0%} of the NMI at the true K")


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def textbook_of(rows: list[dict], r: dict) -> dict | None:
    return next((x for x in rows if x["method"] == "textbook" and x["corpus"] == r["corpus"]
                 and x["scale"] == r["scale"]), None)


def check(rows: list[dict]) -> list[str]:
    failures = []
    for r in rows:
        t = textbook_of(rows, r)
        if r["method"] != "ours" or r["corpus"] not in TOPICAL or t is None:
            continue
        if mean(r["nmi"]) <= mean(t["nmi"]):
            failures.append(f"{r['corpus']} x{r['scale']} {r['layout']}: NMI mean {mean(r['nmi']):.3f} not above "
                            f"the textbook's {mean(t['nmi']):.3f}")
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        for layout in dict.fromkeys(r["layout"] for r in rows):
            ours = sorted((r["scale"], r["peak_mb"] - r["base_mb"]) for r in rows
                          if r["method"] == "ours" and r["corpus"] == corpus and r["layout"] == layout)
            if len(ours) > 1 and ours[-1][1] > ours[0][1] * (1 + MEMORY_GROWTH):
                failures.append(f"{corpus} {layout}: our working memory grows from {ours[0][1]:.0f} MB "
                                f"(x{ours[0][0]}) to {ours[-1][1]:.0f} MB (x{ours[-1][0]}), more than "
                                f"{MEMORY_GROWTH:.0%}")
    return failures


def print_table(rows: list[dict]) -> None:
    print(f"\n{'corpus':<7}{'scale':>6}{'docs':>8}  {'layout':<9}{'method':<9}{'K':>3}  {'NMI mean':>9} {'min':>6} "
          f"{'max':>6}  {'wall s':>7} {'CPU s':>7}  {'peak MB':>8} {'working MB':>11}")
    for r in rows:
        nmi = r["nmi"]
        print(f"{r['corpus']:<7}{r['scale']:>6}{r['docs']:>8}  {r['layout']:<9}{r['method']:<9}{r['k']:>3}  "
              f"{mean(nmi):>9.3f} {min(nmi):>6.3f} {max(nmi):>6.3f}  {r['seconds']:>7.1f} {r['cpu']:>7.1f}  "
              f"{r['peak_mb']:>8.0f} {r['peak_mb'] - r['base_mb']:>11.0f}")
    print("\nratios (ours / textbook, same corpus and scale):")
    for r in rows:
        t = textbook_of(rows, r)
        if r["method"] != "ours" or t is None:
            continue
        print(f"  {r['corpus']} x{r['scale']} {r['layout']}: NMI {mean(r['nmi']):.3f} vs {mean(t['nmi']):.3f} "
              f"({mean(r['nmi']) / max(mean(t['nmi']), 1e-9):.2f}x), wall {r['seconds'] / t['seconds']:.2f}x, "
              f"CPU {r['cpu'] / max(t['cpu'], 1e-9):.2f}x, working memory {r['peak_mb'] - r['base_mb']:.0f} vs "
              f"{t['peak_mb'] - t['base_mb']:.0f} MB")


if __name__ == "__main__":
    main()
