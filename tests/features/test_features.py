"""features: hashing TF-IDF + streaming SVD against scikit-learn, Word2Vec, scalers, model reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import pipeline.features as features
from pipeline.dataset import MANIFEST
from pipeline.features import text

from .corpora import as_docs, sms_frame, write_docs


@pytest.fixture(scope="module")
def sms_docs(shared_data, tmp_path_factory) -> Path:
    return write_docs(as_docs(sms_frame(shared_data), "sms"), tmp_path_factory.mktemp("f") / "docs", 4)


def shard_hashes(root: Path) -> list[str]:
    return [s["sha256"] for s in json.loads((root / MANIFEST).read_text())["shards"]]


def test_streaming_svd_matches_truncated_svd(sms_docs, tmp_path, local_engine):
    from sklearn.decomposition import TruncatedSVD

    options = features.Options(svd_components=20, svd_iterations=4)
    result = features.run([sms_docs], tmp_path / "feat", options, local_engine)
    assert (result.rows_in, result.rows_out) == (5574, 5574)
    out = pl.read_parquet(tmp_path / "feat" / "*.parquet")
    # every input column carried through, vectors unit length
    assert {"id", "text", "label", "meta", "true_label", "words"} <= set(out.columns)
    assert out.schema["tfidf_svd"] == pl.Array(pl.Float32, 20)
    norms = np.linalg.norm(out["tfidf_svd"].to_numpy(), axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-4)
    # the same TF-IDF matrix in memory, decomposed by scikit-learn's exact (ARPACK) SVD
    models = tmp_path / "feat" / "_models"
    idf, buckets = np.load(models / "idf.npy"), np.load(models / "svd_buckets.npy")
    docs = pl.read_parquet(sms_docs / "*.parquet")
    x = text.tfidf(text.hashed_counts(docs["text"].to_list(), 2**17, None), idf, True)[:, buckets]
    exact = TruncatedSVD(20, algorithm="arpack").fit(x).singular_values_
    meta = json.loads((models / "features.json").read_text())
    ours = np.array(meta["singular_values"])
    assert np.allclose(ours[:10], exact[:10], rtol=0.01)
    assert meta["n_docs"] == 5574 and meta["svd_components"] == 20
    # one more component fitted, the first (common direction) left out
    assert meta["svd_dropped_first"] is True and len(ours) == 21


def test_svd_vocabulary_is_capped_to_the_most_frequent_buckets(sms_docs, tmp_path, local_engine):
    options = features.Options(svd_components=10, svd_vocabulary=500)
    features.run([sms_docs], tmp_path / "feat", options, local_engine)
    models = tmp_path / "feat" / "_models"
    buckets = np.load(models / "svd_buckets.npy")
    meta = json.loads((models / "features.json").read_text())
    assert len(buckets) == meta["svd_buckets"] == 500 and meta["buckets_weighted"] > 4000
    assert np.load(models / "svd_components.npy").shape == (500, 10)
    counts = text.hashed_counts(pl.read_parquet(sms_docs / "*.parquet")["text"].to_list(), 2**17, None)
    df = np.bincount(counts.indices, minlength=2**17)
    kept = df >= 2
    # the 500 kept buckets are the most frequent ones: none left out is more frequent
    left_out = np.setdiff1d(np.flatnonzero(kept), buckets)
    assert df[buckets].min() >= df[left_out].max()
    assert np.array_equal(buckets, np.sort(buckets))
    out = pl.read_parquet(tmp_path / "feat" / "*.parquet")
    assert out.schema["tfidf_svd"] == pl.Array(pl.Float32, 10)


def test_word2vec_scaler_and_model_reuse(sms_docs, tmp_path, local_engine):
    options = features.Options(svd_components=16, word2vec=True, w2v_size=32, w2v_epochs=2,
                               numeric=["words"], scaler="standard")
    features.run([sms_docs], tmp_path / "a", options, local_engine)
    first = pl.read_parquet(tmp_path / "a" / "*.parquet")
    assert first.schema["w2v"] == pl.Array(pl.Float32, 32)
    assert abs(first["words_scaled"].mean()) < 1e-6
    assert abs(first["words_scaled"].std(ddof=0) - 1.0) < 1e-6
    models = tmp_path / "a" / "_models"
    assert {"idf.npy", "svd_components.npy", "word2vec.model", "word2vec.kv", "scaler.pkl"} <= {
        p.name for p in models.iterdir()}
    # same seed, same data → byte-identical shards (Word2Vec with one worker thread)
    features.run([sms_docs], tmp_path / "b", options, local_engine)
    assert shard_hashes(tmp_path / "a") == shard_hashes(tmp_path / "b")
    # new data (one shard of it) through the saved models gives the same vectors, no refit
    new = write_docs(pl.read_parquet(sms_docs / "part-00002.parquet"), tmp_path / "new", 1)
    reuse = options.model_copy(update={"models": str(models)})
    features.run([new], tmp_path / "c", reuse, local_engine)
    again = pl.read_parquet(tmp_path / "c" / "*.parquet")
    expected = first.filter(pl.col("id").is_in(again["id"].implode()))
    for column in ("tfidf_svd", "w2v", "words_scaled"):
        assert np.allclose(np.asarray(again[column].to_list()), np.asarray(expected[column].to_list()), atol=1e-6)


def test_dask_engine_gives_the_same_vectors(sms_docs, tmp_path, dask_engine, local_engine):
    options = features.Options(svd_components=16, keep_sparse=True)
    features.run([sms_docs], tmp_path / "local", options, local_engine)
    result = features.run([sms_docs], tmp_path / "dask", options, dask_engine)
    assert result.rows_out == 5574
    a = pl.read_parquet(tmp_path / "local" / "*.parquet")
    b = pl.read_parquet(tmp_path / "dask" / "*.parquet")
    assert np.allclose(a["tfidf_svd"].to_numpy(), b["tfidf_svd"].to_numpy(), atol=1e-5)
    assert a["tfidf_idx"].to_list() == b["tfidf_idx"].to_list()


def test_cli_help_and_bad_value(tmp_path, sms_docs):
    from pipeline.cli import cli

    runner = CliRunner()
    shown = runner.invoke(cli, ["features", "--help"])
    assert shown.exit_code == 0
    for flag in ("--svd-components", "--word2vec", "--numeric", "--scaler", "--models"):
        assert flag in shown.output
    bad = runner.invoke(cli, ["features", "--input", str(sms_docs), "--output", str(tmp_path / "x"),
                              "--svd-components", "-3", "--workers", "0"])
    assert bad.exit_code == 2 and "svd_components" in bad.output
