"""The shipped jobs end to end: the demo (crawl of the local docs site) and the SMS recipe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset import Dataset
from pipeline.runner import run_job

REPO = Path(__file__).resolve().parent.parent


def quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    first = run_job(REPO / "jobs" / "demo.toml", out=out, echo=quiet, engine_overrides={"workers": 2})
    return out, first


def test_demo_runs_every_stage_and_counts_add_up(demo):
    out, results = demo
    assert [r.stage for r in results] == ["fetch", "extract", "clean", "dedup", "features",
                                          "cluster", "label", "split", "tokens", "report", "export"]
    by_stage = {r.stage: r for r in results}
    # the whole local site is crawled, each page once
    raw = Dataset(out / "raw").scan().select("url", "status").collect()
    assert raw.height > 500 and raw["url"].n_unique() == raw.height
    assert by_stage["fetch"].rows_out == raw.height
    for stage in ("extract", "clean", "dedup"):
        result = by_stage[stage]
        assert result.rows_in == result.rows_out + sum(result.dropped.values()), stage
    # the error rows (pages the site could not render) are what extract dropped for fetch errors
    assert by_stage["extract"].dropped.get("fetch_error", 0) == raw.filter(pl.col("status") != 200).height
    assert by_stage["clean"].rows_out > 0.7 * by_stage["extract"].rows_out  # documentation survives
    audit = Dataset(out / "duplicates").scan().collect()
    assert audit.height == sum(by_stage["dedup"].dropped.values())
    splits = Dataset(out / "splits").scan().select("id", "split", "near_group").collect()
    assert splits["id"].n_unique() == splits.height == by_stage["dedup"].rows_out
    assert set(splits["split"].unique()) == {"train", "val", "test"}
    groups = splits.filter(pl.col("near_group").is_not_null()).group_by("near_group").agg(pl.col("split").n_unique())
    assert groups["split"].max() == 1  # no near-duplicate group straddles two splits
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert (out / "report" / "index.html").stat().st_size > 10_000 and metrics
    assert json.loads((out / "_job.json").read_text())["results"][-1]["stage"] == "export"


def test_demo_export_is_what_datasets_loads(demo, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    out, results = demo
    loaded = datasets.load_dataset(str(out / "export"))
    splits = Dataset(out / "tokens").scan().select("id", "split", "n_tokens").collect()
    assert {name: loaded[name].num_rows for name in loaded} == {
        "train": splits.filter(pl.col("split") == "train").height,
        "validation": splits.filter(pl.col("split") == "val").height,
        "test": splits.filter(pl.col("split") == "test").height}
    assert loaded["train"].column_names == ["text", "id", "title", "url", "label", "n_tokens"]
    card = (out / "export" / "README.md").read_text()
    train_tokens = int(splits.filter(pl.col("split") == "train")["n_tokens"].sum())
    assert f"| train | {loaded['train'].num_rows} | {train_tokens:,} |" in card
    assert 'license: "psf-2.0"' in card and "Counted with tokenizer `gpt2`" in card


def test_demo_rerun_resumes_with_the_same_output(demo):
    out, _ = demo
    before = {p: json.loads((out / p / "_manifest.json").read_text())["content_sha256"]
              for p in ("raw", "docs", "clean", "unique", "splits", "tokens", "export")}
    again = run_job(REPO / "jobs" / "demo.toml", out=out, echo=quiet, engine_overrides={"workers": 2})
    by_stage = {r.stage: r for r in again}
    assert by_stage["extract"].skipped_tasks > 0 and by_stage["clean"].skipped_tasks > 0
    after = {p: json.loads((out / p / "_manifest.json").read_text())["content_sha256"] for p in before}
    assert after == before


def test_partial_run_reads_the_nearest_earlier_stage(demo):
    """`pipeline run JOB --stages features` reads dedup's output, not the last folder of the job."""
    out, _ = demo
    again = run_job(REPO / "jobs" / "demo.toml", out=out, only=["features"], echo=quiet,
                    engine_overrides={"workers": 2})
    assert [r.stage for r in again] == ["features"]
    inputs = json.loads((out / "features" / "_manifest.json").read_text())["inputs"]
    assert [Path(p).name for p in inputs] == ["unique"]
    assert again[0].skipped_tasks > 0  # same input and options as the full run: resumed


def test_sms_recipe_gives_exact_stratified_splits(tmp_path, monkeypatch):
    # a clone holds jobs/ and data/ and nothing beside it: run the recipe from such a copy
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "jobs", clone / "jobs")
    shutil.copytree(REPO / "data", clone / "data")
    monkeypatch.chdir(clone)
    results = run_job(Path("jobs/sms_spam.toml"), out=tmp_path / "sms", echo=quiet,
                      engine_overrides={"workers": 0})
    by_stage = {r.stage: r for r in results}
    assert by_stage["fetch"].rows_out == 5574
    manifest = json.loads((tmp_path / "sms" / "splits" / "manifest.json").read_text())
    splits = Dataset(tmp_path / "sms" / "splits").scan().select("split", "label").collect()
    counts = splits.group_by("split", "label").len()
    total = by_stage["dedup"].rows_out
    for split, share in (("val", 0.1), ("test", 0.1)):
        for label in ("spam", "ham"):
            in_corpus = Dataset(tmp_path / "sms" / "unique").scan().filter(pl.col("label") == label).select(pl.len()).collect().item()
            got = counts.filter((pl.col("split") == split) & (pl.col("label") == label))["len"].sum()
            assert abs(got - in_corpus * share) <= 1.0, (split, label, got, in_corpus * share)
    train = counts.filter(pl.col("split") == "train")
    assert train.filter(pl.col("label") == "ham")["len"].item() == 2000  # capped in train only
    assert total > 4500 and manifest
