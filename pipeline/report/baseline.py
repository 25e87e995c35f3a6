"""Is the data learnable? A linear baseline on hashed TF-IDF, and label-noise candidates.

The model is scikit-learn's HashingVectorizer (word 1-2 grams, no vocabulary to hold) →
TfidfTransformer → a logistic-loss linear classifier fitted by SGD, trained on the bounded
train sample. It is
cross-validated on train (stratified folds) and scored on the validation sample. The
out-of-fold probabilities of the cross-validation also give label-noise candidates in the
spirit of confident learning (Northcutt et al., 2021): each class gets a threshold, the mean
probability the model gives that class on rows labelled with it; a row is a candidate when
another class clears its own threshold and beats the given label.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np
import polars as pl

NOT_APPLICABLE = "not applicable"


BASELINE_CHARS = 3_000  # the baseline reads each document's first 3,000 characters


def hashed(texts: list[str], n_features: int):
    """Term counts of word 1-2 grams in 2^k hashed columns (stateless: done once, shared by
    every fold). Each text is cut to its first BASELINE_CHARS characters, so one very long
    document (a 300-page manual) costs no more than a long article: the baseline's cost is
    bounded by the sample size, not by the longest document."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(n_features=n_features, alternate_sign=False, ngram_range=(1, 2),
                                   norm=None, lowercase=True, dtype=np.float32)
    return vectorizer.transform([text[:BASELINE_CHARS] for text in texts])


def make_model(seed: int, n_classes: int = 2):
    """TF-IDF (fitted per fold) and a logistic-loss linear classifier fitted by SGD.

    SGD costs O(non-zeros x epochs) whatever the number of classes; the dual liblinear solver
    used before went one-vs-rest and took over a minute for 17 classes x 5 folds on a 20,000-row
    sample (measured on the scale benchmark's corpus), for the same kind of model."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline

    del n_classes  # SGDClassifier handles any number of classes itself
    classifier = SGDClassifier(loss="log_loss", alpha=2e-5, max_iter=20, tol=1e-3,
                               class_weight="balanced", random_state=seed)
    return make_pipeline(TfidfTransformer(sublinear_tf=True), classifier)


@contextmanager
def bounded_epochs():
    """The baseline stops SGD at 20 epochs on purpose (a quick learnability check, not a tuned
    model): scikit-learn's ConvergenceWarning about it says nothing to the user, so not shown."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def scores(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro and per-class precision/recall/F1 and the confusion matrix (rows = true)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {
        "rows": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {
            "labels": labels,
            "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        },
    }


def confident_learning_candidates(given: np.ndarray, probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """Index of the suggested class for each row, or -1 when the given label looks right.

    given: (n,) class indices; probs: (n, k) out-of-fold probabilities.
    """
    k = len(classes)
    thresholds = np.array([probs[given == j, j].mean() if np.any(given == j) else 1.0 for j in range(k)])
    above = probs >= thresholds[None, :]
    masked = np.where(above, probs, -1.0)
    best = masked.argmax(axis=1)
    confident = masked.max(axis=1) >= 0
    flagged = confident & (best != given) & (probs[np.arange(len(given)), best] > probs[np.arange(len(given)), given])
    return np.where(flagged, best, -1)


def run_baseline(sample: pl.DataFrame, seed: int, cv_folds: int, n_features: int,
                 max_examples: int) -> dict[str, Any]:
    """Baseline and label-noise results from the sample (columns id, split, label, text)."""
    labelled = sample.filter(pl.col("label").is_not_null() & (pl.col("label").str.strip_chars() != ""))
    if labelled.height == 0:
        return {"status": f"{NOT_APPLICABLE}: no labels"}
    splits = set(labelled["split"].unique().to_list())
    train_name = "train" if "train" in splits else None
    if train_name is None:
        # no split column (or no train split): cross-validate on everything labelled
        train, val = labelled, labelled.clear()
        note = "no train split: cross-validated on every labelled row of the sample; no validation score"
    else:
        val_name = next((n for n in ("val", "validation", "dev") if n in splits), "val")
        train = labelled.filter(pl.col("split") == "train")
        val = labelled.filter(pl.col("split") == val_name)
        note = "" if val.height else "no validation rows: cross-validation only"
    train = train.sort("id", "text")  # the sample's order depends on shard order; fix it
    counts = train["label"].value_counts().sort("label")
    classes = counts["label"].to_list()
    if len(classes) < 2:
        return {"status": f"{NOT_APPLICABLE}: fewer than 2 classes in train ({classes})",
                "train_rows": train.height}
    result: dict[str, Any] = {
        "status": "ok",
        "model": (f"HashingVectorizer(1-2 grams, 2^{int(np.log2(n_features))} features) + "
                  "TfidfTransformer(sublinear) + SGDClassifier(log loss, alpha=2e-5, balanced); "
                  f"first {BASELINE_CHARS:,} characters of each text"),
        "train_rows": train.height,
        "val_rows": val.height,
        "classes": classes,
        "note": note,
    }
    texts = train["text"].to_list()
    features = hashed(texts, n_features)
    y = np.array(train["label"].to_list())
    folds = min(cv_folds, int(counts["count"].min()))
    if folds >= 2:
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        with bounded_epochs():
            probs = cross_val_predict(make_model(seed, len(classes)), features, y, cv=cv, method="predict_proba")
        predicted = np.array(classes)[probs.argmax(axis=1)]
        fold_of = np.empty(len(y), dtype=int)
        for fold, (_, test_idx) in enumerate(cv.split(features, y)):
            fold_of[test_idx] = fold
        accs = [float((predicted[fold_of == f] == y[fold_of == f]).mean()) for f in range(folds)]
        cv_scores = scores(y.tolist(), predicted.tolist(), classes)
        result["cv"] = {"folds": folds, "accuracy_mean": float(np.mean(accs)),
                        "accuracy_std": float(np.std(accs)), "fold_accuracy": accs,
                        "macro_f1": cv_scores["macro_f1"], "accuracy": cv_scores["accuracy"]}
        given = np.searchsorted(classes, y)
        suggested = confident_learning_candidates(given, probs, classes)
        flagged = np.flatnonzero(suggested >= 0)
        margin = probs[flagged, suggested[flagged]] - probs[flagged, given[flagged]]
        order = flagged[np.argsort(-margin, kind="stable")]
        pairs: dict[str, int] = {}
        for i in flagged:
            key = f"{classes[given[i]]} → {classes[suggested[i]]}"
            pairs[key] = pairs.get(key, 0) + 1
        ids = train["id"].to_list()
        result["label_noise"] = {
            "method": "confident learning on out-of-fold probabilities (per-class mean thresholds)",
            "rows_checked": len(y),
            "candidates": int(flagged.size),
            "rate": float(flagged.size / len(y)),
            "by_transition": dict(sorted(pairs.items())),
            "examples": [
                {"id": ids[i], "given": classes[given[i]], "suggested": classes[suggested[i]],
                 "p_given": round(float(probs[i, given[i]]), 4),
                 "p_suggested": round(float(probs[i, suggested[i]]), 4),
                 "text": texts[i][:300]}
                for i in order[:max_examples]
            ],
        }
    else:
        result["cv"] = None
        result["label_noise"] = None
        result["note"] = (note + "; " if note else "") + "a class has fewer than 2 train rows: no cross-validation"
    if val.height:
        with bounded_epochs():
            model = make_model(seed, len(classes)).fit(features, y)
        val_true = val["label"].to_list()
        labels = classes + sorted(set(val_true) - set(classes))
        result["validation"] = scores(val_true, model.predict(hashed(val["text"].to_list(), n_features)).tolist(), labels)
    else:
        result["validation"] = None
    return result
