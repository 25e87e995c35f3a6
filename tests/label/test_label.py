"""label: the labels.toml round trip (name, merge, drop), and propagation from a few seeds."""

from __future__ import annotations

import tomllib
from pathlib import Path

import polars as pl
import pytest
from features.corpora import as_docs, sms_frame, write_docs

import pipeline.label as label
from pipeline.config import ConfigError
from pipeline.hashing import xxhash64
from pipeline.schema import rejected_folder


def write_map(entries: list[dict], path: Path) -> Path:
    lines = []
    for e in entries:
        lines.append("[[cluster]]")
        lines += [f"{k} = {v!r}".replace("'", '"').replace("True", "true").replace("False", "false")
                  for k, v in e.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_default_map_names_clusters_by_top_terms(sms_clusters, tmp_path, local_engine):
    result = label.run([sms_clusters], tmp_path / "lab", label.Options(), local_engine)
    assert result.rows_out == 5574 and result.dropped == {}
    names = {e["id"]: e["name"] for e in tomllib.loads((sms_clusters / "labels.toml").read_text())["cluster"]}
    out = pl.read_parquet(tmp_path / "lab" / "*.parquet")
    pairs = out.select("cluster", "label").unique().sort("cluster")
    assert dict(pairs.iter_rows()) == names
    assert out["label_source"].unique().to_list() == ["map"]
    assert out["label_confidence"].unique().to_list() == [1.0]


def test_label_map_round_trip_rename_merge_drop(sms_clusters, tmp_path, local_engine):
    template = tomllib.loads((sms_clusters / "labels.toml").read_text())["cluster"]
    edited = [{"id": e["id"], "name": e["name"]} for e in template]
    edited[0]["name"] = "alpha"
    edited[2] = {"id": 2, "merge_into": 1}
    edited[3]["drop"] = True
    del edited[4]["name"]  # left unnamed: rows stay unlabelled
    path = write_map(edited, tmp_path / "labels.toml")
    result = label.run([sms_clusters], tmp_path / "lab", label.Options(map=str(path)), local_engine)
    clusters = pl.read_parquet(sms_clusters / "*.parquet")
    sizes = dict(clusters.group_by("cluster").len().iter_rows())
    assert result.dropped == {"cluster_dropped": sizes[3]}
    assert result.rows_in == result.rows_out + sizes[3] == 5574
    out = pl.read_parquet(tmp_path / "lab" / "*.parquet")
    by_cluster = dict(out.group_by("cluster").agg(pl.col("label").unique()).iter_rows())
    assert by_cluster[0] == ["alpha"]
    assert by_cluster[2] == by_cluster[1] == [template[1]["name"]]
    assert by_cluster[4] == [None]
    assert 3 not in by_cluster
    rejected = pl.read_parquet(rejected_folder(tmp_path / "lab") / "*.parquet")
    assert rejected.height == sizes[3] and rejected["reason"].unique().to_list() == ["cluster_dropped"]
    assert set(rejected["id"]) == set(clusters.filter(pl.col("cluster") == 3)["id"])
    # editing the map changes the fingerprint: the re-run applies the new names, nothing stale
    edited[0]["name"] = "beta"
    write_map(edited, path)
    label.run([sms_clusters], tmp_path / "lab", label.Options(map=str(path)), local_engine)
    again = pl.read_parquet(tmp_path / "lab" / "*.parquet")
    assert again.filter(pl.col("cluster") == 0)["label"].unique().to_list() == ["beta"]


def test_bad_map_names_the_key(sms_clusters, tmp_path, local_engine):
    path = write_map([{"id": 0, "name": "a", "drop": "yes"}], tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="drop"):
        label.run([sms_clusters], tmp_path / "lab", label.Options(map=str(path)), local_engine)
    path = write_map([{"id": 0, "merge_into": 9}], tmp_path / "bad2.toml")
    with pytest.raises(ConfigError, match="merge_into 9"):
        label.run([sms_clusters], tmp_path / "lab", label.Options(map=str(path)), local_engine)


def test_propagation_from_few_seeds(sms_clusters, tmp_path, dask_engine):
    clusters = pl.read_parquet(sms_clusters / "*.parquet", columns=["id", "true_label"])
    # a deterministic ~4% of rows (about 220) as seeds, as a person labelling a few would
    seeds = clusters.filter(xxhash64(pl.col("id")) % 100 < 4).rename({"true_label": "label"})
    assert 150 < seeds.height < 300
    seed_file = tmp_path / "seeds.jsonl"
    seeds.write_ndjson(seed_file)
    options = label.Options(seed_labels=str(seed_file), min_confidence=0.8)
    result = label.run([sms_clusters], tmp_path / "lab", options, dask_engine)
    out = pl.read_parquet(tmp_path / "lab" / "*.parquet")
    predicted = out.filter(pl.col("label_source") == "model")
    accuracy = (predicted["label"] == predicted["true_label"]).mean()
    assert accuracy > 0.93
    assert predicted["label_confidence"].min() >= 0.8
    unlabelled = out.filter(pl.col("label").is_null())
    assert result.details["below_confidence"] == unlabelled.height
    assert unlabelled["label_confidence"].null_count() == unlabelled.height
    seeded = out.filter(pl.col("label_source") == "seed")
    assert seeded.height == seeds.height == result.details["seeds_found"]
    assert (seeded["label"] == seeded["true_label"]).all()
    # predictions cover most rows: ham/spam is separable from the TF-IDF SVD vectors
    assert predicted.height > 0.8 * (5574 - seeds.height)


def test_source_labels_kept_unless_overwrite(sms_clusters, tmp_path, local_engine):
    from pipeline.dataset import write_shard

    frame = pl.read_parquet(sms_clusters / "part-00000.parquet").with_columns(
        label=pl.when(pl.int_range(pl.len()) < 10).then(pl.lit("given")).otherwise(None))
    write_shard(frame, tmp_path / "in", "part-00000.parquet")
    (tmp_path / "in" / "labels.toml").write_text((sms_clusters / "labels.toml").read_text())
    label.run([tmp_path / "in"], tmp_path / "kept", label.Options(), local_engine)
    kept = pl.read_parquet(tmp_path / "kept" / "*.parquet")
    assert kept.head(10)["label"].to_list() == ["given"] * 10
    assert kept.head(10)["label_source"].to_list() == ["source"] * 10
    label.run([tmp_path / "in"], tmp_path / "over", label.Options(overwrite=True), local_engine)
    over = pl.read_parquet(tmp_path / "over" / "*.parquet")
    assert "given" not in over["label"].to_list()


def test_job_runs_features_cluster_label_with_defaults(shared_data, tmp_path):
    """The demo's wiring: features → cluster (k auto) → label with the generated labels.toml."""
    from pipeline.runner import run_job

    docs = write_docs(as_docs(sms_frame(shared_data).head(600), "sms"), tmp_path / "unique", 2)
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "chain"\ninput = "{docs}"\noutput = "{tmp_path / "out"}"\n'
                   'stages = ["features", "cluster", "label"]\n[engine]\nworkers = 0\n'
                   '[cluster]\nk_max = 4\n')
    results = run_job(job, echo=lambda *_: None)
    assert [r.stage for r in results] == ["features", "cluster", "label"]
    assert all(r.rows_out == 600 for r in results)
    assert 2 <= results[1].details["k"] <= 4
    out = pl.read_parquet(tmp_path / "out" / "labelled" / "*.parquet")
    names = {e["name"] for e in tomllib.loads((tmp_path / "out" / "clusters" / "labels.toml").read_text())["cluster"]}
    assert set(out["label"].unique()) == names
    assert {"tfidf_svd", "cluster", "cluster_distance", "label_confidence", "true_label"} <= set(out.columns)
