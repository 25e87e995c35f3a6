"""Clean on instruction and chat records: every turn normalised and PII-masked, the rendering
rebuilt from the turns, rules on the joined text or per turn."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import polars as pl
import pytest

from pipeline.clean import Options, clean_shard
from pipeline.fetch.options import FilesSource
from pipeline.fetch.records import records_to_kind
from pipeline.records import chat_text, with_record_columns

LOOSE = dict(min_words=3, min_sentences=None, min_punct_lines_ratio=None, min_stop_words=None,
             min_alpha_words_ratio=None, max_mean_word_length=None, min_mean_word_length=None,
             max_top_2gram_char_ratio=None, max_top_3gram_char_ratio=None, max_top_4gram_char_ratio=None)


def _records(kind: str, layout: str, frame: pl.DataFrame) -> pl.DataFrame:
    fields = FilesSource(glob=["x"], record_kind=kind)
    docs = records_to_kind(frame, fields, kind, layout, "test", "test:x", 0, datetime(2024, 1, 1, tzinfo=UTC))
    assert docs["reason"].null_count() == docs.height
    return docs.drop("reason")


def test_pii_is_masked_in_every_turn_and_the_text_rebuilt():
    chat = _records("chat", "openai", pl.DataFrame({"messages": [[
        {"role": "system", "content": "You answer mail for bob@example.com politely."},
        {"role": "user", "content": "Call me on +44 20 7946 0958 about the order, thanks."},
        {"role": "assistant", "content": "I&amp;I will write to alice@example.org with the  details."},
    ]]}))
    instruction = _records("instruction", "prompt_response", pl.DataFrame({
        "system": ["Reply to carol@example.net only."], "prompt": ["What is my card 4111 1111 1111 1111 for?"],
        "response": ["It is the card on file, nothing more to say."]}))
    frame = pl.concat([chat, instruction], how="vertical")
    out = clean_shard(frame.lazy(), Options(**LOOSE))
    kept = out.frames["main"]
    assert kept.height == 2 and out.frames["rejected"].height == 0
    messages = kept.filter(pl.col("kind") == "chat")["messages"][0].to_list()
    assert [m["content"] for m in messages] == [
        "You answer mail for <EMAIL> politely.",
        "Call me on <PHONE> about the order, thanks.",
        "I&I will write to <EMAIL> with the details.",
    ]
    assert kept.filter(pl.col("kind") == "chat").select(chat_text()).item() == kept.filter(pl.col("kind") == "chat")["text"][0]
    row = kept.filter(pl.col("kind") == "instruction").row(0, named=True)
    assert (row["system"], row["prompt"]) == ("Reply to <EMAIL> only.", "What is my card <CREDIT_CARD> for?")
    assert row["text"] == f"{row['system']}\n\n{row['prompt']}\n\n{row['response']}"
    assert "@" not in "".join(kept["text"])
    assert out.counts == {"pii:email": 3, "pii:iban": 0, "pii:credit_card": 1, "pii:ipv6": 0, "pii:ipv4": 0, "pii:phone": 1}


def test_joined_or_per_turn_rules_and_an_emptied_turn():
    chat = _records("chat", "openai", pl.DataFrame({"messages": [
        [{"role": "user", "content": "Tell me about the history of the old town bridge."},
         {"role": "assistant", "content": "Sure."}],  # 1 word: fails min_words=3 on its own turn only
        [{"role": "user", "content": "<div></div>"},  # markup only: empty once cleaned
         {"role": "assistant", "content": "There is nothing to answer in an empty question."}],
    ]}))
    joined = clean_shard(chat.lazy(), Options(**LOOSE))
    assert joined.frames["main"].height == 1
    assert joined.frames["rejected"]["reason"].to_list() == ["empty turn"]
    per_turn = clean_shard(chat.lazy(), Options(**LOOSE, record_rules="per_turn"))
    assert per_turn.frames["main"].height == 0
    assert sorted(per_turn.frames["rejected"]["reason"]) == ["empty turn", "gopher_min_words"]


def test_text_rows_beside_records_are_cleaned_as_before(shared_data):
    frame = pl.read_ndjson(gzip.decompress((shared_data / "instruct" / "gsm8k_test.jsonl.gz").read_bytes()))
    records = _records("instruction", "question_answer", frame.head(200))
    fields = FilesSource(glob=["x"])
    from pipeline.fetch.records import records_to_docs

    texts = records_to_docs(pl.DataFrame({"text": ["A plain document, written to mail@example.com, is here."]}),
                            fields, "t", "t:x", 0, datetime(2024, 1, 1, tzinfo=UTC))
    mixed = pl.concat([with_record_columns(texts), records], how="vertical")
    out = clean_shard(mixed.lazy(), Options(**LOOSE))
    kept = out.frames["main"]
    assert kept.height + out.frames["rejected"].height == 201
    assert kept.filter(pl.col("kind") == "text")["text"].to_list() == ["A plain document, written to <EMAIL>, is here."]
    gsm = kept.filter(pl.col("kind") == "instruction")
    rejected = out.frames["rejected"]
    assert gsm.height == 200 - rejected.height and set(rejected["kind"]) <= {"instruction"}
    assert set(rejected["reason"]) == {"gopher_hash_ratio"}  # short answers ending in "#### 18"
    assert (gsm["text"] == gsm["prompt"] + "\n\n" + gsm["response"]).all()


@pytest.mark.parametrize("rules", ["joined", "per_turn"])
def test_record_rules_option_is_validated(rules):
    assert Options(record_rules=rules).record_rules == rules
    with pytest.raises(ValueError):
        Options(record_rules="sometimes")
