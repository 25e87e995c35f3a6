"""Export: the trainer's layout loaded by the real `datasets.load_dataset`, only the chosen
columns, each form, packing, and a card whose figures are those of the files written."""

from __future__ import annotations

import json

import datasets
import polars as pl
import pytest
import yaml

from pipeline.export import Options as ExportOptions
from pipeline.export import run as export
from pipeline.tokens import Options as TokenOptions
from pipeline.tokens import count_tokens
from pipeline.tokens import run as count

from .conftest import write_split_dataset


@pytest.fixture(autouse=True)
def offline_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets.disable_progress_bars()


@pytest.fixture()
def split_records(tmp_path, gsm8k) -> pl.DataFrame:
    n = 200
    frame = gsm8k.head(n).with_columns(
        pl.lit("instruction").alias("kind"),
        pl.lit(None, pl.String).alias("system"),
        pl.format("{}\n\n{}", "prompt", "response").alias("text"),
        pl.when(pl.int_range(pl.len()) % 10 == 0).then(pl.lit("test"))
        .when(pl.int_range(pl.len()) % 10 == 1).then(pl.lit("val")).otherwise(pl.lit("train")).alias("split"),
        pl.lit("en").alias("language"),
    )
    write_split_dataset(tmp_path / "splits", frame)
    return frame


def card_header(folder):
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_instruction_export_loads_with_datasets_and_the_card_is_true(tmp_path, split_records, local_engine):
    count([tmp_path / "splits"], tmp_path / "tokens", TokenOptions(tokenizer="gpt2"), local_engine)
    result = export([tmp_path / "tokens"], tmp_path / "export",
                    ExportOptions(format=["parquet", "jsonl"], columns=["id", "n_tokens"], license="mit", title="GSM8K sample"),
                    local_engine)
    loaded = datasets.load_dataset(str(tmp_path / "export"))
    assert sorted(loaded) == ["test", "train", "validation"]
    assert {name: loaded[name].num_rows for name in loaded} == {"train": 160, "validation": 20, "test": 20}
    assert loaded["train"].column_names == ["prompt", "response", "system", "id", "n_tokens"]
    first = loaded["train"][0]
    source = split_records.filter(pl.col("id") == first["id"])
    assert first["prompt"] == source["prompt"][0] and first["response"] == source["response"][0]
    # the JSONL copy holds the same rows
    jsonl = datasets.load_dataset("json", data_files={"test": str(tmp_path / "export" / "test" / "*.jsonl")})
    assert sorted(jsonl["test"]["id"]) == sorted(loaded["test"]["id"])

    header, text = card_header(tmp_path / "export")
    assert header["license"] == "mit" and header["language"] == ["en"] and header["pretty_name"] == "GSM8K sample"
    sizes = {s["name"]: s["num_examples"] for s in header["dataset_info"]["splits"]}
    assert sizes == {"train": 160, "validation": 20, "test": 20}
    tokens = count_tokens(split_records.select(pl.format("{}\n\n{}", "prompt", "response"))["prompt"], "gpt2")
    by_split = split_records.with_columns(pl.Series("t", tokens)).group_by("split").agg(pl.col("t").sum())
    expected = dict(zip(by_split["split"], by_split["t"], strict=True))
    assert f"| train | 160 | {expected['train']:,} |" in text
    assert f"| validation | 20 | {expected['val']:,} |" in text
    assert "Counted with tokenizer `gpt2`" in text
    assert result.details["splits"]["train"]["tokens"] == expected["train"]
    assert result.rows_out == 200


def test_messages_form_and_approximate_tokens(tmp_path, split_records, local_engine):
    export([tmp_path / "splits"], tmp_path / "export", ExportOptions(form="messages", columns=[]), local_engine)
    loaded = datasets.load_dataset(str(tmp_path / "export"))
    assert loaded["train"].column_names == ["messages"]
    turns = loaded["test"][0]["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant"]
    header, text = card_header(tmp_path / "export")
    assert "license" not in header
    assert "Not counted" in text


def test_text_rows_cannot_be_exported_as_instructions(tmp_path, local_engine):
    frame = pl.DataFrame({"id": ["a", "b"], "text": ["one", "two"], "split": ["train", "train"],
                          "kind": ["text", "instruction"], "prompt": [None, "p"], "response": [None, "r"]})
    write_split_dataset(tmp_path / "splits", frame)
    result = export([tmp_path / "splits"], tmp_path / "export", ExportOptions(form="instruction"), local_engine)
    assert result.dropped == {"export_text_as_instruction": 1}
    assert result.rows_out == 1
    rejected = pl.read_parquet(tmp_path / "rejected" / "export" / "**" / "*.parquet")
    assert rejected["id"].to_list() == ["a"]


def test_packed_export_loads_and_states_the_padding_saved(tmp_path, split_records, local_engine):
    result = export([tmp_path / "splits"], tmp_path / "export",
                    ExportOptions(pack=1024, eos_token="<|endoftext|>"), local_engine)
    loaded = datasets.load_dataset(str(tmp_path / "export"))
    train = loaded["train"]
    assert train.column_names == ["input_ids", "seq_lengths", "record_ids", "n_tokens"]
    assert max(len(ids) for ids in train["input_ids"]) <= 1024
    assert sorted(i for ids in train["record_ids"] for i in ids) == sorted(split_records.filter(pl.col("split") == "train")["id"])
    assert result.rows_in == result.rows_out + sum(result.dropped.values()) == 200  # records, not sequences
    packing = result.details["packing"]["splits"]["train"]
    assert packing["sequences"] == train.num_rows
    assert packing["tokens"] == sum(train["n_tokens"])
    assert packing["padding_saved"] == (160 - train.num_rows) * 1024
    header, text = card_header(tmp_path / "export")
    assert f"| train | 160 | {train.num_rows:,} | {packing['fill_rate']:.1%} |" in text
    manifest = json.loads((tmp_path / "export" / "_manifest.json").read_text())
    assert manifest["extra"]["summary"]["packing"]["splits"]["train"]["sequences"] == train.num_rows


def test_the_same_job_writes_the_same_bytes(tmp_path, split_records, local_engine):
    digests = []
    for name in ("a", "b"):
        export([tmp_path / "splits"], tmp_path / name, ExportOptions(format=["parquet", "jsonl"], pack=None), local_engine)
        files = sorted(p for p in (tmp_path / name).rglob("*") if p.suffix in (".parquet", ".jsonl", ".md"))
        digests.append([(p.relative_to(tmp_path / name).as_posix(), p.read_bytes()) for p in files])
    assert digests[0] == digests[1]


def test_approximate_counts_are_marked_as_such_in_the_card(tmp_path, split_records, local_engine):
    result = count([tmp_path / "splits"], tmp_path / "tokens", TokenOptions(), local_engine)
    assert result.details["approximate"] is True
    export([tmp_path / "tokens"], tmp_path / "export", ExportOptions(), local_engine)
    _, text = card_header(tmp_path / "export")
    expected = split_records.filter(pl.col("split") == "train").select(
        ((pl.format("{}\n\n{}", "prompt", "response").str.len_bytes() + 3) // 4).sum()).item()
    assert "| split | rows | tokens (approximate) | bytes on disk |" in text
    assert f"| train | 160 | {expected:,} |" in text
    assert "Counted without a tokenizer: ceil(utf8_bytes / 4) per record (an approximation)." in text


def test_a_column_the_input_lacks_is_an_input_error(tmp_path, split_records, local_engine):
    from pipeline.errors import InputError

    with pytest.raises(InputError, match="no column `n_tokens`"):
        export([tmp_path / "splits"], tmp_path / "export", ExportOptions(columns=["id", "n_tokens"]), local_engine)
