"""Model (transfer) labelling: a linear classifier fitted out-of-core on the labelled rows, calibrated.

The labelled rows (the input's own labels, a person's seeds or queue answers, the label map's
names, or a separate labelled dataset with the same vector columns) are gathered shard by shard on
the workers into small training files (``_models/_work/``: id, label, fold, vectors), so the fit
never reads the unlabelled bulk again and never holds more than one training file.

The fit is scikit-learn ``SGDClassifier(loss="log_loss")`` with ``partial_fit`` over those files,
``epochs`` passes, rows shuffled per file with a seeded generator (single-threaded, so the same
seed gives the same model). Every labelled row has a fold (xxHash64 of ``id:seed`` modulo
``folds``); one model per fold is fitted on the other folds and scores its own fold, which gives
the cross-validated accuracy and macro-F1 per fold and the out-of-fold decision values. The
probabilities are calibrated on those out-of-fold values (Platt scaling: a logistic regression on
the decision values, multinomial for several classes), the approach of scikit-learn's
``CalibratedClassifierCV(ensemble=False)``: the final model is fitted on every labelled row.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.cluster.kmeans import VectorSpec
from pipeline.hashing import xxhash64

LABEL, FOLD = "_train_label", "_fold"


def fold_expr(seed: int, folds: int) -> pl.Expr:
    """The cross-validation fold of a row, from its id (independent of sharding and order)."""
    key = pl.concat_str(pl.col("id").cast(pl.String), pl.lit(f":fold:{seed}"))
    return (xxhash64(key) % folds).cast(pl.Int32)


class CalibratedLinear:
    """A fitted linear model and the calibrator of its decision values (what `_models/` pickles)."""

    def __init__(self, linear, calibrator, classes: np.ndarray):
        self.linear = linear
        self.calibrator = calibrator
        self.classes_ = np.asarray(classes, dtype=object)

    def decision(self, x) -> np.ndarray:
        scores = self.linear.decision_function(x)
        return scores.reshape(-1, 1) if scores.ndim == 1 else scores

    def predict_proba(self, x) -> np.ndarray:
        """(n, classes) calibrated probabilities, columns in the order of ``classes_``."""
        if x.shape[0] == 0:
            return np.zeros((0, len(self.classes_)), dtype=np.float64)
        proba = self.calibrator.predict_proba(self.decision(x))
        # the calibrator knows the classes as indices into classes_; reorder to match
        out = np.zeros((x.shape[0], len(self.classes_)))
        out[:, self.calibrator.classes_.astype(int)] = proba
        return out


def top_two(proba: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Most probable class, its probability, and the margin to the second (float32 arrays)."""
    if proba.shape[0] == 0:
        return np.array([], dtype=object), np.array([], np.float32), np.array([], np.float32)
    order = np.argsort(-proba, axis=1, kind="stable")
    rows = np.arange(proba.shape[0])
    best = proba[rows, order[:, 0]]
    second = proba[rows, order[:, 1]] if proba.shape[1] > 1 else np.zeros_like(best)
    return classes[order[:, 0]], best.astype(np.float32), (best - second).astype(np.float32)


@dataclass
class Training:
    """Where the gathered training files are and how to read them."""

    files: list[Path]
    spec: VectorSpec
    classes: np.ndarray
    class_weight: dict | None
    epochs: int
    batch_rows: int
    alpha: float
    seed: int


def read_training_file(path: Path, spec: VectorSpec, fold: int | None, keep_fold: bool):
    """Vectors and labels of one training file: its fold `fold` only, or every other fold."""
    frame = pl.read_parquet(path)
    if fold is not None:
        frame = frame.filter((pl.col(FOLD) == fold) if keep_fold else (pl.col(FOLD) != fold))
    if frame.height == 0:  # callers skip empty parts (an empty dense column has no width to read)
        return np.zeros((0, 1), np.float32), np.array([], dtype=object)
    return spec.matrix(frame), frame[LABEL].to_numpy().astype(object)


def fit_linear(training: Training, exclude_fold: int | None = None):
    """SGD log-loss classifier, partial_fit over the training files (`epochs` seeded passes)."""
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(loss="log_loss", alpha=training.alpha, class_weight=training.class_weight,
                          random_state=training.seed)
    tag = -1 if exclude_fold is None else exclude_fold
    for epoch in range(training.epochs):
        rng = np.random.default_rng([training.seed, tag + 1, epoch])
        for i in rng.permutation(len(training.files)):
            x, y = read_training_file(training.files[i], training.spec, exclude_fold, keep_fold=False)
            if x.shape[0] == 0:
                continue
            order = np.random.default_rng([training.seed, tag + 1, epoch, int(i)]).permutation(x.shape[0])
            for start in range(0, len(order), training.batch_rows):
                rows = order[start:start + training.batch_rows]
                model.partial_fit(x[rows], y[rows], classes=training.classes)
    return model


def class_indices(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.searchsorted(classes, labels)


def cross_validate(training: Training, folds: int) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Per-fold scores, and the out-of-fold decision values and class indices of every row.

    A fold without rows (few labelled rows) is skipped; its entry says so.
    """
    from sklearn.metrics import accuracy_score, f1_score

    scores, decisions, truths = [], [], []
    for fold in range(folds):
        held = [read_training_file(f, training.spec, fold, keep_fold=True) for f in training.files]
        held = [(x, y) for x, y in held if x.shape[0]]
        if not held:
            scores.append({"fold": fold, "rows": 0})
            continue
        model = fit_linear(training, exclude_fold=fold)
        fold_decisions = [_decision(model, x) for x, _ in held]
        truth = np.concatenate([class_indices(y, training.classes) for _, y in held])
        decision = np.vstack(fold_decisions)
        predicted = _argmax_class(decision)
        scores.append({"fold": fold, "rows": int(len(truth)),
                       "accuracy": round(float(accuracy_score(truth, predicted)), 4),
                       "macro_f1": round(float(f1_score(truth, predicted, average="macro",
                                                        labels=np.arange(len(training.classes)),
                                                        zero_division=0)), 4)})
        decisions.append(decision)
        truths.append(truth)
    return scores, np.vstack(decisions), np.concatenate(truths)


def _decision(model, x) -> np.ndarray:
    scores = model.decision_function(x)
    return scores.reshape(-1, 1) if scores.ndim == 1 else scores


def _argmax_class(decision: np.ndarray) -> np.ndarray:
    """Class index a linear model predicts from its decision values (binary: one column)."""
    if decision.shape[1] == 1:
        return (decision[:, 0] > 0).astype(np.int64)
    return decision.argmax(axis=1)


def calibrator(decision: np.ndarray, truth: np.ndarray, seed: int):
    """Platt scaling of out-of-fold decision values (multinomial logistic regression for several classes)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, random_state=seed).fit(decision, truth)


def fit_calibrated(training: Training, folds: int) -> tuple[CalibratedLinear, list[dict]]:
    """Cross-validate, calibrate on the out-of-fold values, fit the final model on every row."""
    scores, decision, truth = cross_validate(training, folds)
    if len(np.unique(truth)) < 2:
        raise ValueError("the labelled rows hold fewer than two classes; calibration needs two")
    final = fit_linear(training)
    return CalibratedLinear(final, calibrator(decision, truth, training.seed), training.classes), scores


def summary_of(scores: list[dict]) -> dict:
    """Mean accuracy and macro-F1 over the folds that had rows."""
    scored = [s for s in scores if s.get("rows")]
    return {"cv_accuracy": round(float(np.mean([s["accuracy"] for s in scored])), 4),
            "cv_macro_f1": round(float(np.mean([s["macro_f1"] for s in scored])), 4),
            "folds": scores}


def save(model: CalibratedLinear, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(model))


def load(path: Path) -> CalibratedLinear:
    return pickle.loads(Path(path).read_bytes())
