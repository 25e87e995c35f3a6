"""label --route model on the real SMS Spam Collection: calibrated labels, abstention, CV scores, the queue."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest

import pipeline.label as label
from pipeline.config import ConfigError
from pipeline.dataset import Dataset


@pytest.fixture(scope="module")
def truth(sms_clusters) -> pl.DataFrame:
    return pl.read_parquet(sms_clusters / "*.parquet", columns=["id", "true_label", "cluster"])


def seed_file(truth: pl.DataFrame, n: int, path: Path) -> Path:
    truth.sample(n, seed=7).select("id", pl.col("true_label").alias("label")).write_csv(path)
    return path


def test_model_labels_with_calibrated_confidence_and_abstention(sms_clusters, truth, tmp_path, local_engine):
    seeds = seed_file(truth, 150, tmp_path / "seeds.csv")
    options = label.Options(route="model", seed_labels=str(seeds), min_confidence=0.8)
    result = label.run([sms_clusters], tmp_path / "lab", options, local_engine)
    out = pl.read_parquet(tmp_path / "lab" / "*.parquet")
    assert result.rows_in == result.rows_out == out.height == 5574
    sources = dict(out.group_by("label_source").len().iter_rows())
    assert set(sources) == {"seed", "model", "abstained"} and sources["seed"] == 150
    assert sum(sources.values()) == 5574
    assert result.details["labelled_model"] == sources["model"]
    seeded = out.filter(pl.col("label_source") == "seed")
    assert (seeded["label"] == seeded["true_label"]).all() and (seeded["label_confidence"] == 1.0).all()
    modelled = out.filter(pl.col("label_source") == "model")
    assert modelled["label_confidence"].min() >= 0.8
    assert (modelled["label"] == modelled["true_label"]).mean() > 0.9  # real accuracy, measured ~0.97
    abstained = out.filter(pl.col("label_source") == "abstained")
    assert abstained["label"].null_count() == abstained.height > 0
    assert abstained["label_confidence"].max() < 0.8
    # calibrated: the rows it is surer of are right more often
    surest = modelled.filter(pl.col("label_confidence") >= 0.99)
    assert (surest["label"] == surest["true_label"]).mean() >= (modelled["label"] == modelled["true_label"]).mean()
    info = json.loads((tmp_path / "lab" / "_models" / "model.json").read_text())
    assert (tmp_path / "lab" / "_models" / "model.pkl").exists()
    assert info["classes"] == ["ham", "spam"] and info["labelled_rows"] == 150
    assert [f["fold"] for f in info["folds"]] == [0, 1, 2, 3, 4]
    assert sum(f["rows"] for f in info["folds"]) == 150
    assert all(0.0 <= f["macro_f1"] <= 1.0 and 0.5 <= f["accuracy"] <= 1.0 for f in info["folds"])
    assert Dataset(tmp_path / "lab").manifest()["extra"]["cv_macro_f1"] == info["cv_macro_f1"] > 0.6


def test_same_job_same_bytes(sms_clusters, truth, tmp_path, local_engine):
    seeds = seed_file(truth, 80, tmp_path / "seeds.csv")
    options = label.Options(route="model", seed_labels=str(seeds), queue=10)
    for name in ("a", "b"):
        label.run([sms_clusters], tmp_path / name, options, local_engine)
    manifests = [Dataset(tmp_path / n).manifest() for n in ("a", "b")]
    assert manifests[0]["content_sha256"] == manifests[1]["content_sha256"]
    assert (tmp_path / "a" / "queue.csv").read_bytes() == (tmp_path / "b" / "queue.csv").read_bytes()


def test_queue_round_trip_adds_seed_labels(sms_clusters, truth, tmp_path, local_engine):
    seeds = seed_file(truth, 60, tmp_path / "seeds.csv")
    first = label.run([sms_clusters], tmp_path / "lab1",
                      label.Options(route="model", seed_labels=str(seeds), queue=40), local_engine)
    path = tmp_path / "lab1" / "queue.csv"
    assert first.details["queue"] == {"file": str(path), "rows": 40, "clusters": 5}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "text", "cluster", "guess", "confidence", "margin", "label"]
    assert len({r["id"] for r in rows}) == 40 and all(r["label"] == "" for r in rows)
    assert not {r["id"] for r in rows} & set(pl.read_csv(seeds)["id"])  # never a row already labelled
    per_cluster = pl.DataFrame(rows).group_by("cluster").len()["len"]
    assert per_cluster.max() <= 8  # spread: 40 rows over 5 clusters, round robin
    margins = [float(r["margin"]) for r in rows]
    out = pl.read_parquet(tmp_path / "lab1" / "*.parquet")
    pool = out.filter(pl.col("label_source").is_in(["model", "abstained"]))
    assert min(margins) <= 0.05 < pool["label_confidence"].median() - 0.5  # the least sure, not typical rows
    # a person answers: fills the label column in a spreadsheet, leaves two blank
    answers = dict(truth.select("id", "true_label").iter_rows())
    for r in rows[2:]:
        r["label"] = answers[r["id"]]
    edited = tmp_path / "answers.csv"
    with edited.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    second = label.run([sms_clusters], tmp_path / "lab2",
                       label.Options(route="model", seed_labels=str(seeds), answers=[str(edited)]), local_engine)
    assert second.details["person_labels"] == 60 + 38
    assert second.details["labelled_seed"] == 98
    out = pl.read_parquet(tmp_path / "lab2" / "*.parquet")
    answered = out.filter(pl.col("id").is_in([r["id"] for r in rows[2:]]))
    assert answered["label_source"].unique().to_list() == ["seed"]
    assert (answered["label"] == answered["true_label"]).all()
    blank = out.filter(pl.col("id").is_in([r["id"] for r in rows[:2]]))
    assert set(blank["label_source"]) <= {"model", "abstained"}


def test_learns_from_the_inputs_own_labels(sms_clusters, truth, tmp_path, local_engine):
    from pipeline.dataset import write_shard

    frame = pl.read_parquet(sms_clusters / "*.parquet")
    known = frame.with_columns(label=pl.when(pl.int_range(pl.len()) % 10 == 0).then(pl.col("true_label")))
    write_shard(known, tmp_path / "partly", "part-00000.parquet")
    result = label.run([tmp_path / "partly"], tmp_path / "lab", label.Options(route="model"), local_engine)
    assert result.details["labelled_from"] == {"source": 558}
    out = pl.read_parquet(tmp_path / "lab" / "*.parquet")
    assert dict(out.group_by("label_source").len().iter_rows())["source"] == 558
    modelled = out.filter(pl.col("label_source") == "model")
    assert (modelled["label"] == modelled["true_label"]).mean() > 0.9


def test_bad_options_and_answers_are_named(sms_clusters, tmp_path, local_engine):
    with pytest.raises(ValueError, match="queue needs route"):
        label.Options(queue=10)
    bad = tmp_path / "answers.csv"
    bad.write_text("id,guess\nabc,ham\n")
    with pytest.raises(ConfigError, match=r"answers.*answers.csv: missing column\(s\) \['label'\]"):
        label.run([sms_clusters], tmp_path / "lab", label.Options(route="model", answers=[str(bad)]), local_engine)
    with pytest.raises(ValueError, match="at least two classes"):
        label.run([sms_clusters], tmp_path / "lab2", label.Options(route="model"), local_engine)


def test_learns_from_a_separate_labelled_dataset(sms_clusters, tmp_path, local_engine):
    from pipeline.dataset import write_shard

    frame = pl.read_parquet(sms_clusters / "*.parquet")
    write_shard(frame.head(1000).with_columns(label=pl.col("true_label")), tmp_path / "labelled", "part-00000.parquet")
    write_shard(frame.slice(1000), tmp_path / "rest", "part-00000.parquet")
    result = label.run([tmp_path / "rest"], tmp_path / "lab",
                       label.Options(route="model", train_dataset=str(tmp_path / "labelled")), local_engine)
    assert result.details["labelled_from"] == {"dataset": 1000} and result.rows_out == 4574
    out = pl.read_parquet(tmp_path / "lab" / "*.parquet")
    assert set(out["label_source"]) <= {"model", "abstained"}
    modelled = out.filter(pl.col("label_source") == "model")
    assert (modelled["label"] == modelled["true_label"]).mean() > 0.95


def test_dask_workers_and_a_resumed_run_give_the_same_bytes(sms_clusters, truth, tmp_path, local_engine, dask_engine):
    seeds = seed_file(truth, 80, tmp_path / "seeds.csv")
    options = label.Options(route="model", seed_labels=str(seeds), queue=10)
    label.run([sms_clusters], tmp_path / "local", options, local_engine)
    label.run([sms_clusters], tmp_path / "dask", options, dask_engine)
    local, dask = (Dataset(tmp_path / n).manifest() for n in ("local", "dask"))
    assert local["content_sha256"] == dask["content_sha256"]
    # a run killed after some shards: one shard's output lost; the re-run redoes it (and refits)
    lost = tmp_path / "dask" / local["shards"][1]["path"]
    lost.unlink()
    again = label.run([sms_clusters], tmp_path / "dask", options, local_engine)
    assert again.skipped_tasks == 3
    assert Dataset(tmp_path / "dask").manifest()["content_sha256"] == local["content_sha256"]
    assert (tmp_path / "dask" / "queue.csv").read_bytes() == (tmp_path / "local" / "queue.csv").read_bytes()
