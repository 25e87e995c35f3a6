"""Record kinds: each layout's reader, every validation reason and the text rendering."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from pipeline.records import (
    MESSAGES,
    RecordFormatError,
    chat_rejection,
    chat_text,
    detect_format,
    instruction_rejection,
    instruction_text,
    read_chat,
    read_instruction,
)


def _messages(*turns: tuple[str | None, str | None]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


def _chat_reasons(*conversations) -> list[str | None]:
    frame = pl.DataFrame({"messages": list(conversations)}, schema={"messages": MESSAGES})
    return frame.select(chat_rejection()).to_series().to_list()


def test_alpaca_prompt_joins_instruction_and_a_non_empty_input(shared_data):
    records = json.loads(gzip.decompress((shared_data / "instruct" / "gpteacher_roleplay.json.gz").read_bytes()))
    frame = pl.DataFrame(records)
    assert detect_format(frame.columns) == "alpaca"
    fields = read_instruction(frame, "alpaca")
    assert fields.height == 3146 and fields["system"].null_count() == 3146
    with_input = [i for i, r in enumerate(records) if r["input"].strip()]
    assert len(with_input) == 3146 - 2332
    first = records[with_input[0]]
    assert fields["prompt"][with_input[0]] == first["instruction"] + "\n\n" + first["input"]
    without = next(i for i, r in enumerate(records) if not r["input"])
    assert fields["prompt"][without] == records[without]["instruction"]
    assert fields["response"].to_list() == [r["output"] for r in records]
    # whitespace-only input counts as empty
    spaced = read_instruction(pl.DataFrame({"instruction": ["Say hi"], "input": ["  \n"], "output": ["hi"]}), "alpaca")
    assert spaced["prompt"][0] == "Say hi"


def test_question_answer_reads_gsm8k(shared_data):
    frame = pl.read_ndjson(gzip.decompress((shared_data / "instruct" / "gsm8k_test.jsonl.gz").read_bytes()))
    assert detect_format(frame.columns) == "question_answer"
    fields = read_instruction(frame, "question_answer")
    assert fields.height == 1319
    assert fields["prompt"].to_list() == frame["question"].to_list()
    assert fields["response"][0].endswith("#### 18")  # Janet's ducks
    assert fields.select(instruction_rejection()).to_series().null_count() == 1319


@pytest.mark.parametrize(("fields", "layout"), [
    ({"prompt": ["p"], "completion": ["c"]}, "prompt_completion"),
    ({"prompt": ["p"], "response": ["c"]}, "prompt_response"),
    ({"question": ["p"], "answer": ["c"]}, "question_answer"),
])
def test_two_field_layouts_and_an_optional_system(fields, layout):
    frame = pl.DataFrame({**fields, "system": ["Be brief."]})
    assert detect_format(frame.columns) == layout
    out = read_instruction(frame, layout)
    assert out.row(0) == ("Be brief.", "p", "c")
    assert out.select(instruction_text()).item() == "Be brief.\n\np\n\nc"


def test_openai_and_sharegpt_become_messages():
    openai = pl.DataFrame({"messages": [_messages(("system", "S"), ("user", "Hi"), ("assistant", "Hello"))]})
    assert detect_format(openai.columns) == "openai"
    out = read_chat(openai, "openai")
    assert out.schema["messages"] == MESSAGES
    assert out["messages"].to_list()[0] == _messages(("system", "S"), ("user", "Hi"), ("assistant", "Hello"))
    sharegpt = pl.DataFrame({"conversations": [[{"from": "system", "value": "S"}, {"from": "human", "value": "Hi"},
                                                 {"from": "gpt", "value": "Hello"}, {"from": "bard", "value": "?"}]]})
    assert detect_format(sharegpt.columns) == "sharegpt"
    out = read_chat(sharegpt, "sharegpt")
    assert [m["role"] for m in out["messages"][0]] == ["system", "user", "assistant", "bard"]
    assert out.select(chat_rejection()).item() == "chat: turn 4 has unknown role 'bard'"
    assert out.select(chat_text()).item() == "S\n\nHi\n\nHello\n\n?"


def test_instruction_layouts_read_as_chat():
    frame = pl.DataFrame({"question": ["2+2?", "x"], "answer": ["4", "y"], "system": [None, "Math."]})
    out = read_chat(frame, "question_answer")["messages"].to_list()
    assert out[0] == _messages(("user", "2+2?"), ("assistant", "4"))
    assert out[1] == _messages(("system", "Math."), ("user", "x"), ("assistant", "y"))


def test_unknown_layout_and_wrong_kind_are_named():
    with pytest.raises(RecordFormatError, match=r"cannot tell the record format from the fields \['body'\]"):
        detect_format(["body"])
    with pytest.raises(RecordFormatError, match="read them with --kind chat"):
        read_instruction(pl.DataFrame({"messages": [[{"role": "user", "content": "x"}]]}), "openai")
    with pytest.raises(RecordFormatError, match="no 'content' key"):
        read_chat(pl.DataFrame({"messages": [[{"role": "user", "text": "x"}]]}), "openai")


def test_every_instruction_reason():
    frame = pl.DataFrame({"prompt": ["ok", "", "  ", None, "ok", "ok"], "response": ["ok", "x", "x", "x", " \n", None]})
    assert frame.select(instruction_rejection()).to_series().to_list() == [
        None, "instruction: empty prompt", "instruction: empty prompt", "instruction: empty prompt",
        "instruction: empty response", "instruction: empty response"]


def test_every_chat_reason():
    valid = _messages(("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    assert _chat_reasons(
        valid,
        _messages(("user", "a"), ("assistant", "b")),
        _messages(("user", "a"), ("robot", "b")),
        _messages(("user", "a"), (None, "b")),
        _messages(("user", "a"), ("assistant", "  ")),
        _messages(("user", None), ("assistant", "b")),
        _messages(("user", "a"), ("system", "S"), ("assistant", "b")),
        _messages(("assistant", "b"), ("user", "a"), ("assistant", "b")),
        _messages(("system", "S"), ("assistant", "b")),
        _messages(("system", "S"), ("user", "a"), ("user", "b"), ("assistant", "c")),
        _messages(("user", "a"), ("assistant", "b"), ("assistant", "c")),
        _messages(("user", "a"), ("assistant", "b"), ("user", "c")),
        _messages(("system", "S")),
        [],
        None,
    ) == [
        None,
        None,
        "chat: turn 2 has unknown role 'robot'",
        "chat: turn 2 has unknown role 'null'",
        "chat: turn 2 (assistant) is empty",
        "chat: turn 1 (user) is empty",
        "chat: turn 2 is a system message after the first turn",
        "chat: turn 1 role 'assistant' comes before any 'user' turn",
        "chat: turn 2 role 'assistant' comes before any 'user' turn",
        "chat: turn 3 role 'user' follows 'user'",
        "chat: turn 3 role 'assistant' follows 'assistant'",
        "chat: last turn 3 is 'user', not 'assistant'",
        "chat: last turn 1 is 'system', not 'assistant'",
        "chat: no messages",
        "chat: no messages",
    ]


def test_a_field_null_in_every_record_neither_decides_the_layout_nor_shrinks_the_batch():
    frame = pl.DataFrame({"messages": [None, None], "conversations": [[{"from": "human", "value": "Q"},
                                                                      {"from": "gpt", "value": "A"}], None]})
    assert detect_format(frame.schema) == "sharegpt" and detect_format(frame.columns) == "openai"
    out = read_chat(frame.select("messages"), "openai")
    assert out.height == 2 and out.select(chat_rejection()).to_series().to_list() == ["chat: no messages"] * 2
