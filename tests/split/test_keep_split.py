"""--keep-split: a source that ships its own split (GSM8K's train and test files) keeps it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline import split
from pipeline.cli import cli
from pipeline.dataset import MANIFEST
from pipeline.schema import rejected_folder

from .conftest import as_docs, write_docs


@pytest.fixture(scope="module")
def gsm8k_docs(shared_data, tmp_path_factory) -> Path:
    """7,473 train and 1,319 test problems, their file's split moved into `meta` as a fetch does."""
    frames = []
    for name in ("train", "test"):
        with gzip.open(shared_data / "instruct" / f"gsm8k_{name}.jsonl.gz", "rt") as handle:
            rows = [json.loads(line) for line in handle]
        frames.append(pl.DataFrame({"text": [r["question"] for r in rows],
                                    "given": [name] * len(rows)}))
    frame = pl.concat(frames).with_columns(label=pl.lit(None, pl.String))
    docs = as_docs(frame, "gsm8k").with_columns(meta=pl.struct(split="given").struct.json_encode()).drop("given")
    return write_docs(docs, tmp_path_factory.mktemp("gsm8k") / "docs", 3)


def test_keep_split_keeps_the_sources_own_split(gsm8k_docs, tmp_path, local_engine, capsys):
    out = tmp_path / "splits"
    result = split.run([gsm8k_docs], out, split.Options(keep_split="meta.split"), local_engine)
    assert result.rows_in == 8792 and result.rows_out == 8792 and result.dropped == {}
    manifest = json.loads((out / "manifest.json").read_text())
    assert {s: manifest["counts"][s]["rows"] for s in ("train", "val", "test")} == {
        "train": 7473, "val": 0, "test": 1319}
    assert manifest["summary"]["mode"] == "given" and manifest["summary"]["empty_splits"] == []
    assert "warning" not in capsys.readouterr().err  # an empty val is expected for a train/test source
    train = pl.read_parquet(str(out / "train" / "*.parquet"))
    assert set(train["meta"].str.json_path_match("$.split")) == {"train"}
    assert split.verify(out) == []


def test_keep_split_rejects_unmapped_values_with_the_value_and_counts_add_up(gsm8k_docs, tmp_path, local_engine,
                                                                             capsys):
    out = tmp_path / "splits"
    result = split.run([gsm8k_docs], out, split.Options(keep_split="meta.split", split_map="train=train"),
                       local_engine)
    assert result.dropped == {"split value test not in split_map": 1319}
    assert result.rows_out + sum(result.dropped.values()) == result.rows_in
    rejected = pl.read_parquet(str(rejected_folder(out) / "*.parquet"))
    assert rejected.height == 1319 and set(rejected["reason"]) == {"split value test not in split_map"}
    assert json.loads((rejected_folder(out) / MANIFEST).read_text())["rows"] == 1319
    assert "warning: split: test got 0 rows of 8792" in capsys.readouterr().err
    with pytest.raises(Exception, match="test got 0 rows"):
        split.run([gsm8k_docs], tmp_path / "strict", split.Options(
            keep_split="meta.split", split_map="train=train", empty_split="fail"), local_engine)


def test_keep_split_from_the_command_line_and_its_refusals(gsm8k_docs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "splits"
    ok = runner.invoke(cli, ["split", "--input", str(gsm8k_docs), "--output", str(out), "--workers", "0",
                             "--keep-split", "meta.split", "--split-map", "train=train,test=val"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((out / "manifest.json").read_text())["counts"]["val"]["rows"] == 1319
    clash = runner.invoke(cli, ["split", "--input", str(gsm8k_docs), "--output", str(out), "--workers", "0",
                                "--keep-split", "meta.split", "--stratify", "label"])
    assert clash.exit_code != 0 and "keep_split cannot be combined with stratify" in clash.output
    bad_map = runner.invoke(cli, ["split", "--input", str(gsm8k_docs), "--output", str(out), "--workers", "0",
                                  "--keep-split", "meta.split", "--split-map", "train=training"])
    assert bad_map.exit_code != 0 and "split_map" in bad_map.output
    missing = runner.invoke(cli, ["split", "--input", str(gsm8k_docs), "--output", str(tmp_path / "x"),
                                  "--workers", "0", "--keep-split", "fold"])
    assert missing.exit_code != 0 and "keep_split: column 'fold' is not in the input" in missing.output
