"""Label propagation from a few seed rows: a linear classifier on the feature vectors.

The seed file (CSV, JSONL or Parquet with columns ``id`` and ``label``) is small by nature; the
seeds' vectors are fetched from the shards by id on the workers, the classifier (scikit-learn
``LogisticRegression`` or ``SGDClassifier`` with log loss, seeded) is trained on the driver and
pickled to ``_models/classifier.pkl``, and every shard is then predicted on the workers.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.cluster.kmeans import VectorSpec, stack
from pipeline.errors import JobError


def read_seeds(path: Path) -> pl.DataFrame:
    """id, label (String) of the seed rows; nulls and duplicate ids (first kept) removed."""
    path = Path(path)
    if not path.is_file():
        raise JobError(f"--seed-labels {path}: file not found")
    suffix = "".join(path.suffixes).lower()
    if suffix.endswith(".parquet"):
        frame = pl.read_parquet(path)
    elif suffix.endswith((".jsonl", ".ndjson", ".json")):
        frame = pl.read_ndjson(path)
    elif suffix.endswith((".csv", ".tsv")):
        frame = pl.read_csv(path, separator="\t" if suffix.endswith(".tsv") else ",", infer_schema=False)
    else:
        raise JobError(f"--seed-labels {path}: expected .csv, .tsv, .jsonl or .parquet")
    missing = {"id", "label"} - set(frame.columns)
    if missing:
        raise JobError(f"--seed-labels {path}: missing column(s) {sorted(missing)} (has {frame.columns})")
    return (frame.select(pl.col("id").cast(pl.String), pl.col("label").cast(pl.String))
            .drop_nulls().unique("id", keep="first", maintain_order=True))


@dataclass
class GatherTask:
    shard: Path
    spec: VectorSpec
    ids: list[str]


def gather_shard(task: GatherTask) -> tuple[list[str], object]:
    """Worker: the ids and vectors of the seed rows found in one shard."""
    frame = task.spec.read(task.shard, ["id"]).filter(pl.col("id").is_in(task.ids))
    return frame["id"].to_list(), task.spec.matrix(frame)


def training_set(results: list[tuple[list[str], object]], seeds: pl.DataFrame):
    """Stack the gathered vectors and line up their labels (order: shard order, row order)."""
    ids = [i for r in results for i in r[0]]
    if not ids:
        raise JobError("--seed-labels: none of the seed ids is in the input")
    x = stack([r[1] for r in results])
    labels = pl.DataFrame({"id": ids}).join(seeds, on="id", how="left", maintain_order="left")["label"]
    return x, labels.to_numpy(), ids


def train_classifier(x, y: np.ndarray, kind: str, class_weight: str | None, seed: int):
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    if len(np.unique(y)) < 2:
        raise JobError(f"--seed-labels: need at least two labels among the seeds found, got {sorted(set(y))}")
    if kind == "logistic":
        model = LogisticRegression(max_iter=2000, class_weight=class_weight, random_state=seed)
    else:
        model = SGDClassifier(loss="log_loss", class_weight=class_weight, random_state=seed, max_iter=2000, tol=1e-4)
    return model.fit(x, y)


def cross_validated_accuracy(x, y: np.ndarray, kind: str, class_weight: str | None, seed: int) -> float | None:
    """5-fold stratified accuracy on the seeds (None when a label has fewer than 5 seeds)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < 5:
        return None
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    model = (LogisticRegression(max_iter=2000, class_weight=class_weight, random_state=seed) if kind == "logistic"
             else SGDClassifier(loss="log_loss", class_weight=class_weight, random_state=seed, max_iter=2000, tol=1e-4))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return round(float(cross_val_score(model, x, y, cv=folds).mean()), 4)


def save_model(model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(model))


def load_model(path: Path):
    return pickle.loads(Path(path).read_bytes())


def predict(model, x) -> tuple[np.ndarray, np.ndarray]:
    """Most probable label and its probability for every row."""
    if x.shape[0] == 0:
        return np.array([], dtype=object), np.array([], dtype=np.float32)
    proba = model.predict_proba(x)
    best = proba.argmax(axis=1)
    return model.classes_[best], proba[np.arange(len(best)), best].astype(np.float32)
