"""Dedup on instruction and chat records: keyed on the whole record (default) or the prompt."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

import pipeline.dedup as dedup
from pipeline.dataset import Dataset, write_shard
from pipeline.fetch.options import FilesSource
from pipeline.fetch.records import records_to_kind


def _kind_rows(kind: str, layout: str, frame: pl.DataFrame, prefix: str) -> pl.DataFrame:
    docs = records_to_kind(frame, FilesSource(glob=["x"], record_kind=kind), kind, layout, "test", prefix, 0,
                           datetime(2024, 1, 1, tzinfo=UTC))
    return docs.drop("reason")


@pytest.fixture(scope="module")
def records_input(shared_data: Path, tmp_path_factory) -> tuple[Path, dict[str, set[str]]]:
    """GSM8K test problems as instruction records, plus planted copies: the same record again,
    the same question with another answer, and chats that repeat one conversation or its
    question. Two shards, so duplicates are found across shards."""
    gsm = pl.read_ndjson(gzip.decompress((shared_data / "instruct" / "gsm8k_test.jsonl.gz").read_bytes()))
    originals = _kind_rows("instruction", "question_answer", gsm, "gsm")
    same_record = _kind_rows("instruction", "question_answer", gsm.slice(0, 20), "copy")
    same_question = _kind_rows("instruction", "question_answer", gsm.slice(20, 20).with_columns(
        answer=pl.lit("I do not know; ask a teacher about this one.")), "reask")
    chat = [{"role": "user", "content": gsm["question"][100]}, {"role": "assistant", "content": gsm["answer"][100]}]
    other = [{"role": "user", "content": gsm["question"][100]}, {"role": "assistant", "content": "No idea at all."}]
    chats = _kind_rows("chat", "openai", pl.DataFrame({"messages": [chat, chat, other]}), "chat")
    root = tmp_path_factory.mktemp("records") / "clean"
    write_shard(pl.concat([originals.slice(0, 700), chats]), root, "part-0.parquet")
    write_shard(pl.concat([originals.slice(700), same_record, same_question]), root, "part-1.parquet")
    # roles are not rendered: a chat of GSM8K problem 100 and its answer is the same record as
    # the instruction (kept, it comes first), so both chats of it are duplicates
    planted = {"record": set(same_record["id"]) | {chats["id"][0], chats["id"][1]},
               "prompt_only": set(same_question["id"]) | {chats["id"][2]}}
    return root, planted


@pytest.mark.parametrize("key", ["record", "prompt"])
def test_dedup_keys_on_the_record_or_the_prompt(records_input, key, tmp_path, local_engine):
    root, planted = records_input
    result = dedup.run([root], tmp_path / "unique", dedup.Options(key=key, near=False), local_engine)
    removed = Dataset(tmp_path / "duplicates").scan().collect()
    kept = Dataset(tmp_path / "unique").scan().collect()
    expected = planted["record"] | (planted["prompt_only"] if key == "prompt" else set())
    assert set(removed["id"]) == expected
    assert result.rows_in == 1319 + 20 + 20 + 3 and kept.height + removed.height == result.rows_in
    # the chat with a new answer stays when the whole record is the key
    assert set(kept["kind"]) == ({"instruction", "chat"} if key == "record" else {"instruction"})
    assert set(removed["kind"]) == {"exact"} and set(removed["record_kind"]) <= {"instruction", "chat"}
    assert kept["messages"].dtype == pl.read_parquet(root / "part-0.parquet")["messages"].dtype


def test_near_duplicate_answers_are_found_on_the_whole_record(records_input, tmp_path, local_engine):
    root, planted = records_input
    dedup.run([root], tmp_path / "unique", dedup.Options(), local_engine)
    removed = Dataset(tmp_path / "duplicates").scan().collect()
    assert planted["record"] <= set(removed["id"])
    # a new answer is a different record: the re-asked questions stay on the whole-record key
    assert not planted["prompt_only"] & set(removed.filter(pl.col("kind") == "exact")["id"])
