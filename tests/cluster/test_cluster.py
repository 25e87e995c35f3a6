"""cluster: determinism (same seed → same clusters, locally and on Dask), K auto, summary, labels.toml."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from features.corpora import as_docs, rotten_frame, sms_frame, write_docs
from sklearn.metrics import normalized_mutual_info_score

import pipeline.cluster as cluster
import pipeline.features as features
from pipeline.dataset import MANIFEST


@pytest.fixture(scope="module")
def rotten_features(shared_data, tmp_path_factory) -> Path:
    from pipeline.engine import Engine

    root = tmp_path_factory.mktemp("c")
    frame = rotten_frame(shared_data).sample(3000, seed=3)
    docs = write_docs(as_docs(frame, "rt"), root / "docs", 3)
    features.run([docs], root / "feat", features.Options(svd_components=40), Engine(workers=0, progress=False))
    return root / "feat"


@pytest.fixture(scope="module")
def sms_features(shared_data, tmp_path_factory) -> Path:
    from pipeline.engine import Engine

    root = tmp_path_factory.mktemp("s")
    docs = write_docs(as_docs(sms_frame(shared_data), "sms"), root / "docs", 4)
    features.run([docs], root / "feat", features.Options(svd_components=40), Engine(workers=0, progress=False))
    return root / "feat"


def shard_hashes(root: Path) -> list[str]:
    return [s["sha256"] for s in json.loads((root / MANIFEST).read_text())["shards"]]


def test_same_seed_same_clusters_local_and_dask(rotten_features, tmp_path, local_engine, dask_engine):
    options = cluster.Options(k="4", seed=7, passes=2)
    first = cluster.run([rotten_features], tmp_path / "a", options, local_engine)
    second = cluster.run([rotten_features], tmp_path / "b", options, dask_engine)
    assert first.rows_out == second.rows_out == 3000
    assert shard_hashes(tmp_path / "a") == shard_hashes(tmp_path / "b")
    assert (tmp_path / "a" / "summary.json").read_text().replace(str(tmp_path / "a"), "") == \
        (tmp_path / "b" / "summary.json").read_text().replace(str(tmp_path / "b"), "")
    a = pl.read_parquet(tmp_path / "a" / "*.parquet")
    assert a.schema["cluster"] == pl.Int32 and a.schema["cluster_distance"] == pl.Float32
    assert set(a["cluster"].unique()) == {0, 1, 2, 3}
    # every input column is carried through
    assert {"id", "text", "true_label", "words", "tfidf_svd"} <= set(a.columns)


def test_summary_and_label_template(rotten_features, tmp_path, local_engine):
    result = cluster.run([rotten_features], tmp_path / "cl", cluster.Options(k=3, examples=3), local_engine)
    summary = json.loads((tmp_path / "cl" / "summary.json").read_text())
    assert summary["k"] == 3 and summary["k_chosen_by"] == "option"
    out = pl.read_parquet(tmp_path / "cl" / "*.parquet")
    sizes = out.group_by("cluster").len().sort("cluster")["len"].to_list()
    assert [c["size"] for c in summary["clusters"]] == sizes == result.details["sizes"]
    for c in summary["clusters"]:
        assert len(c["top_terms"]) == 10 and len(c["examples"]) == 3
        distances = [e["distance"] for e in c["examples"]]
        assert distances == sorted(distances)
        members = out.filter(pl.col("cluster") == c["cluster"])
        assert abs(distances[0] - members["cluster_distance"].min()) < 1e-5
    template = tomllib.loads((tmp_path / "cl" / "labels.toml").read_text())
    entries = template["cluster"]
    assert [e["id"] for e in entries] == [0, 1, 2]
    assert [e["name"] for e in entries] == [c["name"] for c in summary["clusters"]]
    assert all(e["drop"] is False for e in entries)
    assert entries[0]["name"] == "-".join(summary["clusters"][0]["top_terms"][:3])


def test_k_auto_by_silhouette(sms_features, tmp_path, local_engine):
    options = cluster.Options(k="auto", k_min=2, k_max=5, sample_size=1500)
    result = cluster.run([sms_features], tmp_path / "cl", options, local_engine)
    scores = {int(k): v for k, v in json.loads((tmp_path / "cl" / "summary.json").read_text())["silhouette_by_k"].items()}
    assert sorted(scores) == [2, 3, 4, 5]
    assert result.details["k"] == max(scores, key=lambda k: (scores[k], -k))
    assert result.details["k_chosen_by"] == "silhouette"


def test_two_clusters_find_spam(sms_features, tmp_path, local_engine):
    cluster.run([sms_features], tmp_path / "cl", cluster.Options(k=2), local_engine)
    out = pl.read_parquet(tmp_path / "cl" / "*.parquet")
    nmi = normalized_mutual_info_score(out["true_label"].to_numpy(), out["cluster"].to_numpy())
    assert nmi > 0.25
    spam_cluster = out.filter(pl.col("true_label") == "spam")["cluster"].mode()[0]
    share = out.filter(pl.col("cluster") == spam_cluster)["true_label"].eq("spam").mean()
    assert share > 0.6
    assert np.isfinite(out["cluster_distance"].to_numpy()).all()


def test_bad_k_is_named():
    from pipeline.config import ConfigError, validate_options

    with pytest.raises(ConfigError, match="k"):
        validate_options(cluster.Options, {"k": "many"}, "job.toml")
    assert cluster.Options(k=5).k == "5"
