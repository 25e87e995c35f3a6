"""Train-only augmentation of a rare class: a baseline classifier's minority-class F1, with and without.

Corpus: Rotten Tomatoes (../shared/data/labelled, 13,905 texts: fresh 7,403, rotten 5,405, plot
1,097), labels as `label`. `pipeline features --word2vec` (the corpus's own Word2Vec, for the
synonyms), `pipeline split --stratify label` (0.8/0.1/0.1, seed 42), then for each seed S:
`pipeline augment --classes plot --max-per-parent 4 --seed S` (EDA: synonym, insert, swap,
delete). The baseline classifier is scikit-learn TfidfVectorizer(sublinear_tf, min_df=2) +
LogisticRegression(max_iter=2000), fitted on train without and with the augmented rows (same
seed), and, as a control, with the same number of rows as plain copies of their parents
(what over-sampling gives), all scored on the untouched test split: F1 of `plot`, macro-F1, and plot's precision and
recall. --small N first keeps only N plot rows of train (a rarer class, where EDA is said to help
most), the same rows for both arms.

    .venv/bin/python benchmarks/bench_augment.py                    # seeds 0-2
    .venv/bin/python benchmarks/bench_augment.py --seeds 0 --small 100
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
RARE = "plot"


def prepare(work: Path, engine) -> Path:
    import pipeline.features as features
    import pipeline.split as split
    from pipeline.dataset import write_shard
    from pipeline.hashing import doc_id

    frame = pl.read_csv(bz2.decompress((DATA / "rotten_tomatoes.csv.bz2").read_bytes()))
    docs = frame.with_row_index("row").select(
        id=doc_id(pl.concat_str(pl.lit("rt:"), pl.col("row").cast(pl.String))), text="text",
        label="category")
    for i in range(0, docs.height, 4000):
        write_shard(docs.slice(i, 4000), work / "docs", f"part-{i // 4000:05d}.parquet")
    features.run([work / "docs"], work / "features", features.Options(tfidf=False, word2vec=True), engine)
    split.run([work / "features"], work / "splits", split.Options(stratify="label", shard_rows=4000), engine)
    return work / "splits"


def keep_few(splits: Path, n: int, target: Path) -> Path:
    """A copy of the splits with only n (seeded) plot rows left in train."""
    from pipeline.dataset import write_shard

    rows = pl.read_parquet(splits / "**/*.parquet")
    plot = rows.filter((pl.col("split") == "train") & (pl.col("label") == RARE)).sample(n, seed=0)
    kept = rows.filter((pl.col("split") != "train") | (pl.col("label") != RARE) | pl.col("id").is_in(plot["id"].implode()))
    for split in ("train", "val", "test"):
        write_shard(kept.filter(pl.col("split") == split), target, f"{split}/part-00000.parquet")
    return target


def evaluate(train: pl.DataFrame, test: pl.DataFrame, seed: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2)
    x = vectorizer.fit_transform(train["text"].fill_null("").to_list())
    model = LogisticRegression(max_iter=2000, random_state=seed).fit(x, train["label"].to_list())
    predicted = model.predict(vectorizer.transform(test["text"].fill_null("").to_list()))
    truth = test["label"].to_list()
    p, r, f, _ = precision_recall_fscore_support(truth, predicted, labels=[RARE], zero_division=0)
    return {"plot_f1": f[0], "plot_precision": p[0], "plot_recall": r[0],
            "macro_f1": f1_score(truth, predicted, average="macro")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--small", type=int, default=0, help="keep only this many plot rows in train (0 = all)")
    parser.add_argument("--max-per-parent", type=int, default=4)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    from pipeline.augment import Augment, Options
    from pipeline.engine import Engine

    engine = Engine(workers=0, progress=False)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-augment-"))
    started = time.perf_counter()
    splits = prepare(work, engine)
    if args.small:
        splits = keep_few(splits, args.small, work / "few")
    rows = pl.read_parquet(splits / "**/*.parquet", columns=["id", "text", "label", "split"])
    train, test = rows.filter(pl.col("split") == "train"), rows.filter(pl.col("split") == "test")
    counts = dict(train.group_by("label").len().sort("label").iter_rows())
    print(f"bench_augment: Rotten Tomatoes, train {counts}, test {test.height} rows "
          f"(plot {test.filter(pl.col('label') == RARE).height}); max_per_parent {args.max_per_parent}")
    print(f"{'seed':>4}  {'arm':<10}{'train rows':>11}{'plot F1':>9}{'plot P':>8}{'plot R':>8}{'macro-F1':>10}")
    w2v = work / "features" / "_models" / "word2vec.kv"
    for seed in args.seeds:
        base = evaluate(train, test, seed)
        result = Augment(Options(classes=[RARE], max_per_parent=args.max_per_parent, seed=seed,
                                 word2vec_model=str(w2v))).run([splits], work / f"aug{seed}", engine, fresh=True)
        augmented = pl.read_parquet(work / f"aug{seed}" / "**/*.parquet",
                                    columns=["id", "text", "label", "split", "parent_id"])
        augmented_train = augmented.filter(pl.col("split") == "train")
        more = evaluate(augmented_train, test, seed)
        # the same rows as plain copies of their parents: what EDA adds beyond re-weighting the class
        parent_text = augmented_train.select(pl.col("id").alias("parent_id"), pl.col("text").alias("_parent_text"))
        copied_train = augmented_train.join(parent_text, on="parent_id", how="left", maintain_order="left").select(
            pl.coalesce("_parent_text", "text").alias("text"), "label")
        copied = evaluate(copied_train, test, seed)
        for arm, train_rows, m in (("without", train.height, base), ("copies", copied_train.height, copied),
                                   ("with EDA", augmented_train.height, more)):
            print(f"{seed:>4}  {arm:<10}{train_rows:>11}{m['plot_f1']:>9.3f}{m['plot_precision']:>8.3f}"
                  f"{m['plot_recall']:>8.3f}{m['macro_f1']:>10.3f}")
        print(f"      generated {result.details['generated']}, unchanged {result.details['unchanged']}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.work is None:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
