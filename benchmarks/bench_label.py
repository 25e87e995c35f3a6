"""Model labelling and the active-learning queue on real labelled corpora, labels hidden.

Corpora (../shared/data/labelled): the SMS Spam Collection (5,574: ham, spam) and Rotten
Tomatoes (13,905: fresh, rotten, plot), as document shards with `label` null; the truth rides
along in `true_label`, which no stage reads. Each corpus goes through `pipeline features`
(hashing TF-IDF + SVD, defaults) and `pipeline cluster --k 8`, in-process.

For each repeat r (seed r), both strategies start from the same 20 random seed labels and add
labels until 50, 100 and 200 have been added:
- queue: `pipeline label --route model --queue 25`, the queue.csv answered from the truth (as a
  person would fill it), read back with --answers, again, 25 rows a round;
- random: the same number of rows drawn at random (seed r), given as --seed-labels.
After each step the model route labels every row (--min-confidence 0) and the macro-F1 and
accuracy of its labels on the rows nobody labelled are measured against the truth. The table
prints the mean over the repeats (min-max) and the CV macro-F1 the model reported for itself.

    .venv/bin/python benchmarks/bench_label.py                       # both corpora, 3 repeats
    .venv/bin/python benchmarks/bench_label.py --corpus sms --repeats 1
"""

from __future__ import annotations

import argparse
import bz2
import shutil
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "labelled"
START, BATCH, STEPS = 20, 25, (50, 100, 200)


def corpus(name: str) -> pl.DataFrame:
    if name == "sms":
        frame = pl.read_csv(DATA / "sms_spam.tsv", separator="\t", quote_char=None, has_header=True,
                            new_columns=["true_label", "text"])
    else:
        frame = pl.read_csv(bz2.decompress((DATA / "rotten_tomatoes.csv.bz2").read_bytes())).select(
            pl.col("category").alias("true_label"), "text")
    from pipeline.hashing import doc_id

    return frame.with_row_index("row").select(
        id=doc_id(pl.concat_str(pl.lit(f"{name}:"), pl.col("row").cast(pl.String))),
        text="text", label=pl.lit(None, pl.String), true_label="true_label")


def prepare(name: str, work: Path, engine) -> Path:
    import pipeline.cluster as cluster
    import pipeline.features as features
    from pipeline.dataset import write_shard

    docs = corpus(name)
    for i in range(0, docs.height, 2000):
        write_shard(docs.slice(i, 2000), work / "docs", f"part-{i // 2000:05d}.parquet")
    features.run([work / "docs"], work / "features", features.Options(), engine)
    cluster.run([work / "features"], work / "clusters", cluster.Options(k=8), engine)
    return work / "clusters"


def score(output: Path, hidden: set[str]) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    out = pl.read_parquet(output / "*.parquet", columns=["id", "label", "true_label"])
    out = out.filter(~pl.col("id").is_in(list(hidden)))
    return (float(f1_score(out["true_label"], out["label"], average="macro")),
            float(accuracy_score(out["true_label"], out["label"])))


def write_labels(frame: pl.DataFrame, path: Path) -> Path:
    frame.select("id", pl.col("true_label").alias("label")).write_csv(path)
    return path


def run_label(clusters: Path, output: Path, engine, **options):
    import pipeline.label as label

    return label.run([clusters], output, label.Options(route="model", min_confidence=0.0, **options), engine,
                     fresh=True)


def curve(clusters: Path, truth: pl.DataFrame, repeat: int, work: Path, engine) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    start = truth.sample(START, seed=repeat)
    seeds = write_labels(start, work / "start.csv")
    rows = []
    # random: nested draws of the same generator, from the rows not in the start set
    pool = truth.filter(~pl.col("id").is_in(start["id"].implode())).sample(fraction=1.0, shuffle=True, seed=repeat)
    for n in STEPS:
        chosen = pl.concat([start, pool.head(n)])
        result = run_label(clusters, work / "random", engine, seed_labels=str(write_labels(chosen, work / "random.csv")),
                           seed=repeat)
        f1, acc = score(work / "random", set(chosen["id"]))
        rows.append({"strategy": "random", "added": n, "macro_f1": f1, "accuracy": acc,
                     "cv_macro_f1": result.details["cv_macro_f1"]})
    answered = pl.DataFrame(schema={"id": pl.String, "true_label": pl.String})
    answers = work / "answers.csv"
    while answered.height < STEPS[-1]:
        options = {"answers": [str(answers)]} if answered.height else {}
        run_label(clusters, work / "queue", engine, seed_labels=str(seeds), queue=BATCH, seed=repeat, **options)
        queued = pl.read_csv(work / "queue" / "queue.csv", schema_overrides={"id": pl.String})
        answered = pl.concat([answered, truth.filter(pl.col("id").is_in(queued["id"].implode())).select("id", "true_label")])
        write_labels(answered, answers)
        if answered.height in STEPS:
            result = run_label(clusters, work / "queue-eval", engine, seed_labels=str(seeds),
                               answers=[str(answers)], seed=repeat)
            f1, acc = score(work / "queue-eval", set(start["id"]) | set(answered["id"]))
            rows.append({"strategy": "queue", "added": answered.height, "macro_f1": f1, "accuracy": acc,
                         "cv_macro_f1": result.details["cv_macro_f1"]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", choices=["sms", "rt", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="folder for the datasets (default: a temp folder)")
    args = parser.parse_args()
    from pipeline.engine import Engine

    engine = Engine(workers=0, progress=False)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-label-"))
    print(f"bench_label: corpora {args.corpus}, {args.repeats} repeats, start {START} random labels, "
          f"queue batches of {BATCH}; work {work}")
    print(f"{'corpus':<7}{'strategy':<9}{'added':>6}  {'macro-F1 mean (min-max)':<26}{'accuracy':>9}{'CV macro-F1':>13}")
    for name in (["sms", "rt"] if args.corpus == "both" else [args.corpus]):
        started = time.perf_counter()
        clusters = prepare(name, work / name, engine)
        truth = pl.read_parquet(clusters / "*.parquet", columns=["id", "true_label"])
        results = []
        for repeat in range(args.repeats):
            results += curve(clusters, truth, repeat, work / name / f"r{repeat}", engine)
        table = (pl.DataFrame(results).group_by("strategy", "added")
                 .agg(pl.col("macro_f1").mean().alias("f1"), pl.col("macro_f1").min().alias("lo"),
                      pl.col("macro_f1").max().alias("hi"), pl.col("accuracy").mean().alias("acc"),
                      pl.col("cv_macro_f1").mean().alias("cv"))
                 .sort("added", "strategy", descending=[False, True]))
        for r in table.iter_rows(named=True):
            print(f"{name:<7}{r['strategy']:<9}{r['added']:>6}  {r['f1']:.3f} ({r['lo']:.3f}-{r['hi']:.3f})"
                  f"{'':<7}{r['acc']:>9.3f}{r['cv']:>13.3f}")
        print(f"{name}: {time.perf_counter() - started:.0f} s")
    if args.work is None:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
