"""jobs/instruct.toml end to end on the real GSM8K and GPTeacher data: instruction records through
clean, dedup, split, decontamination against GSM8K test (checked against a plain-Python reference
of the 13-gram rule), tokens, report and export."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import unicodedata
from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset import Dataset
from pipeline.runner import run_job

REPO = Path(__file__).resolve().parent.parent


def grams(text: str | None, n: int = 13) -> set[tuple[str, ...]]:
    """The documented rule, written independently: NFKC, lower case, \\w+ words, n-grams (a
    shorter text is one window of all its words)."""
    words = re.findall(r"\w+", unicodedata.normalize("NFKC", text or "").lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def record_grams(row: dict) -> set[tuple[str, ...]]:
    return grams(row.get("system")) | grams(row["prompt"]) | grams(row["response"])


@pytest.fixture(scope="module")
def instruct(tmp_path_factory):
    """The job run as on a fresh clone: a copy of jobs/ and data/ and nothing beside it."""
    clone = tmp_path_factory.mktemp("instruct") / "clone"
    shutil.copytree(REPO / "jobs", clone / "jobs")
    shutil.copytree(REPO / "data", clone / "data")
    before = os.getcwd()
    os.chdir(clone)  # the job's paths are relative to the repository's root
    try:
        results = run_job(Path("jobs/instruct.toml"), out=clone / "out", echo=lambda *a, **k: None,
                          engine_overrides={"workers": 0})
    finally:
        os.chdir(before)
    return clone / "out", {r.stage: r for r in results}, clone / "data" / "instruct"


def test_every_stage_runs_and_counts_add_up(instruct):
    out, results, _ = instruct
    assert list(results) == ["fetch", "clean", "dedup", "split", "decontaminate", "tokens", "report", "export"]
    assert results["fetch"].rows_out == 7473 + 3146
    for stage in ("clean", "dedup", "decontaminate"):
        result = results[stage]
        assert result.rows_in == result.rows_out + sum(result.dropped.values()), stage
    kinds = Dataset(out / "tokens").scan().select("kind", "split", "n_tokens").collect()
    assert set(kinds["kind"]) == {"instruction"} and kinds["n_tokens"].min() > 0
    assert kinds.height == results["decontaminate"].rows_out


def test_decontamination_matches_the_reference(instruct):
    out, results, data = instruct
    with gzip.open(data / "gsm8k_test.jsonl.gz", "rt", encoding="utf-8") as handle:
        test_questions = [json.loads(line)["question"] for line in handle]
    benchmark = set().union(*(grams(q) for q in test_questions))
    splits = Dataset(out / "splits").scan().collect()
    own = {s: set().union(*(record_grams(r) for r in splits.filter(pl.col("split") == s).iter_rows(named=True)))
           for s in ("val", "test")}
    expected: dict[str, set[str]] = {"gsm8k_test": set(), "val": set(), "test": set()}
    for row in splits.filter(pl.col("split") == "train").iter_rows(named=True):
        found = record_grams(row)
        for name, target in (("gsm8k_test", benchmark), *own.items()):
            if found & target:
                expected[name].add(row["id"])
    rejected = Dataset(out / "rejected" / "decontaminated").scan().collect()
    assert set(rejected["id"]) == set().union(*expected.values())
    assert expected["gsm8k_test"]  # GSM8K's own train/test overlap is real and found
    details = results["decontaminate"].details["benchmarks"]
    assert {k: v["contaminated_train_rows"] for k, v in details.items()} == {k: len(v) for k, v in expected.items()}
    # val and test went through untouched
    after = Dataset(out / "decontaminated").scan().filter(pl.col("split") != "train").collect().sort("id")
    assert after.equals(splits.filter(pl.col("split") != "train").sort("id"))
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["decontamination"]["benchmarks"] == details
    assert metrics["volume"]["tokens"]["status"] == "ok"
    assert sum(s["rows"] for s in metrics["volume"]["tokens"]["by_split"].values()) == results["tokens"].rows_out
    assert {p.name for p in (out / "export").iterdir() if p.is_dir()} >= {"train", "validation", "test"}
