"""augment on real SMS splits: new rows only in train, parents and groups kept, counts that add up."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from features.corpora import as_docs, sms_frame, write_docs

import pipeline.features as features
import pipeline.split as split
from pipeline.augment import Augment, Options, augment_frame, eda
from pipeline.dataset import Dataset
from pipeline.errors import JobError


@pytest.fixture(scope="module")
def sms_splits(shared_data, tmp_path_factory) -> Path:
    """features --word2vec (no TF-IDF) then a stratified, grouped split, in a job's folder layout."""
    from pipeline.engine import Engine

    engine = Engine(workers=0, progress=False)
    root = tmp_path_factory.mktemp("aug")
    docs = as_docs(sms_frame(shared_data), "sms").with_columns(
        label=pl.col("true_label"), near_group=pl.col("id").str.slice(0, 2))  # 256 groups of ~22 rows
    write_docs(docs, root / "docs", 3)
    features.run([root / "docs"], root / "features", features.Options(tfidf=False, word2vec=True), engine)
    split.run([root / "features"], root / "splits",
              split.Options(stratify="label", group="near_group", shard_rows=2000), engine)
    return root / "splits"


def test_augments_train_only_with_parents_groups_and_counts(sms_splits, tmp_path, local_engine):
    before = pl.read_parquet(sms_splits / "**/*.parquet")
    train_spam = before.filter((pl.col("split") == "train") & (pl.col("label") == "spam")).height
    result = Augment(Options(classes=["spam"], max_per_parent=2)).run([sms_splits], tmp_path / "aug", local_engine)
    out = pl.read_parquet(tmp_path / "aug" / "**/*.parquet")
    new = out.filter(pl.col("augmented"))
    planned = 2 * train_spam  # target = the ham count, far above: every parent gives max_per_parent
    assert new.height + result.details["unchanged"] == planned
    assert new.height > 0.9 * planned and result.rows_out == before.height + new.height
    assert new["split"].unique().to_list() == ["train"]  # never in val or test
    assert new["label"].unique().to_list() == ["spam"]
    parents = new.join(before.select(pl.col("id").alias("parent_id"), pl.col("split").alias("p_split"),
                                     pl.col("near_group").alias("p_group"), pl.col("label").alias("p_label"),
                                     pl.col("text").alias("p_text")), on="parent_id", how="left")
    assert parents["p_split"].to_list() == ["train"] * new.height
    assert (parents["near_group"] == parents["p_group"]).all()  # a parent's copies stay in its group
    assert (parents["p_label"] == "spam").all() and (parents["text"] != parents["p_text"]).all()
    assert new["w2v"].null_count() == new.height  # the parent's vector does not describe the new text
    assert new["id"].n_unique() == new.height and not set(new["id"]) & set(before["id"])
    originals = out.filter(~pl.col("augmented")).drop("augmented", "parent_id")
    assert originals.sort("id").equals(before.sort("id"))  # val, test and train rows unchanged
    generated = Dataset(tmp_path / "aug").manifest()["extra"]["generated"]
    assert list(generated) == ["spam"] and set(generated["spam"]) == set(eda.OPS)
    assert sum(generated["spam"].values()) == new.height


def test_target_and_bytes(sms_splits, tmp_path, local_engine):
    before = pl.read_parquet(sms_splits / "**/*.parquet", columns=["split", "label"])
    train_spam = before.filter((pl.col("split") == "train") & (pl.col("label") == "spam")).height
    target = train_spam + 100
    for name in ("a", "b"):
        result = Augment(Options(target=target, ops=["swap", "delete"])).run([sms_splits], tmp_path / name,
                                                                            local_engine)
    assert result.details["augmented"] + result.details["unchanged"] == 100  # ham is over the target
    manifests = [Dataset(tmp_path / n).manifest() for n in ("a", "b")]
    assert manifests[0]["content_sha256"] == manifests[1]["content_sha256"]


def test_missing_word2vec_is_a_job_error(sms_splits, tmp_path, local_engine):
    with pytest.raises(JobError, match="need Word2Vec neighbours.*nowhere.kv does not exist"):
        Augment(Options(word2vec_model=str(tmp_path / "nowhere.kv"))).run([sms_splits], tmp_path / "x", local_engine)


def test_eda_operations_on_known_words():
    parents = pl.DataFrame({"id": ["a"], "text": ["the quick brown fox jumps over the lazy dog"], "_copies": [8]})
    copies = eda.plan_copies(parents, ["synonym"], 1)
    table = pl.DataFrame({"_word_key": ["quick", "fox"], "_synonyms": [["fast"], ["wolf"]]})
    texts = eda.augment_texts(copies, "text", 0.2, 1, ["quick", "fox"], lambda words: table).to_list()
    assert set(texts) <= {"the fast brown fox jumps over the lazy dog", "the quick brown wolf jumps over the lazy dog",
                          "the fast brown wolf jumps over the lazy dog"}
    for op in ("swap", "delete"):
        text = eda.augment_texts(eda.plan_copies(parents, [op], 3), "text", 0.2, 3).to_list()
        words = [sorted(t.split()) for t in text]
        original = sorted(parents["text"][0].split())
        if op == "swap":
            assert all(w == original for w in words)
        else:
            assert all(set(w) <= set(original) and 1 <= len(w) < len(original) + 1 for w in words)
    frame = pl.DataFrame({"id": ["p"], "text": ["a b c d"], "label": ["x"], "split": ["val"]})
    out, counts = augment_frame(frame, Options(ops=["swap"]), {"x": 3})
    assert out.height == 1 and counts["augmented"] == 0  # a val row is never a parent


def test_dask_workers_and_a_resumed_run_give_the_same_bytes(sms_splits, tmp_path, local_engine, dask_engine):
    options = Options(classes=["spam"], max_per_parent=1)
    Augment(options).run([sms_splits], tmp_path / "local", local_engine)
    Augment(options).run([sms_splits], tmp_path / "dask", dask_engine)
    local = Dataset(tmp_path / "local").manifest()
    assert Dataset(tmp_path / "dask").manifest()["content_sha256"] == local["content_sha256"]
    train_shard = next(s["path"] for s in local["shards"] if s["path"].startswith("train/"))
    (tmp_path / "dask" / train_shard).unlink()
    again = Augment(options).run([sms_splits], tmp_path / "dask", local_engine)
    assert again.skipped_tasks == len(local["shards"]) - 1
    assert Dataset(tmp_path / "dask").manifest()["content_sha256"] == local["content_sha256"]
    assert again.details["generated"] == Dataset(tmp_path / "local").manifest()["extra"]["generated"]


def test_in_a_job_after_split_with_the_jobs_own_word2vec(sms_splits, tmp_path):
    from pipeline.runner import run_job

    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
input = "{sms_splits.parent / 'docs'}"
stages = ["features", "split", "augment", "report"]

[features]
tfidf = false
word2vec = true

[split]
stratify = "label"

[augment]
classes = ["spam"]
max_per_parent = 1
""")
    results = run_job(job, out=tmp_path / "out", echo=lambda *a, **k: None, engine_overrides={"workers": 0})
    assert [r.stage for r in results] == ["features", "split", "augment", "report"]
    augment = results[2]
    assert augment.details["word2vec_model"] == str((tmp_path / "out" / "features" / "_models" / "word2vec.kv").resolve())
    assert augment.rows_out == results[1].rows_out + augment.details["augmented"] > results[1].rows_out
    assert results[3].rows_in > 0 and (tmp_path / "out" / "report" / "index.html").exists()
