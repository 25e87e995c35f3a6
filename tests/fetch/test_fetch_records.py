"""`fetch files` with instruction and chat records, and files with bad lines (#16 items 1-2,
#17 items 5, 6, 8, 18): every malformed line or invalid record reaches the rejected dataset
with file, line and reason, and the counts add up."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset import Dataset
from pipeline.fetch import FilesSource, Options, run
from pipeline.fetch.files import FilesError
from pipeline.records import MESSAGES


def fetch(output: Path, engine, *sources):
    result = run([], output, Options(sources=list(sources)), engine)
    rejected = output.parent / "rejected" / output.name
    shards = Dataset(rejected).shard_paths() if Dataset(rejected).exists() else []
    rejected_rows = pl.read_parquet(shards) if shards else pl.DataFrame()
    return Dataset(output).scan().collect(), rejected_rows, result


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- the real instruction data ------------------------------------------------------------------
def test_gsm8k_and_gpteacher_become_instruction_records(shared_data, tmp_path, local_engine):
    folder = shared_data / "instruct"
    gsm8k = FilesSource(glob=[str(folder / "gsm8k_train.jsonl.gz")], record_kind="instruction", name="gsm8k")
    gpteacher = FilesSource(glob=[str(folder / "gpteacher_roleplay.json.gz")], record_kind="instruction",
                            name="gpteacher", shard_mb=0.5)
    frame, rejected, result = fetch(tmp_path / "raw", local_engine, gsm8k, gpteacher)
    assert result.rows_in == result.rows_out == 7473 + 3146 and rejected.height == 0
    assert dict(frame.group_by("source").len().iter_rows()) == {"gsm8k": 7473, "gpteacher": 3146}
    assert set(frame["kind"]) == {"instruction"} and frame["messages"].null_count() == frame.height
    assert frame.schema["messages"] == MESSAGES
    first = json.loads(gzip.decompress((folder / "gsm8k_train.jsonl.gz").read_bytes()).split(b"\n")[0])
    row = frame.filter(pl.col("prompt") == first["question"]).row(0, named=True)
    assert row["response"] == first["answer"] and row["meta"] == "{}"
    assert row["text"] == first["question"] + "\n\n" + first["answer"]
    roleplay = json.loads(gzip.decompress((folder / "gpteacher_roleplay.json.gz").read_bytes()))
    with_input = next(r for r in roleplay if r["input"])
    row = frame.filter(pl.col("response") == with_input["output"]).row(0, named=True)
    assert row["prompt"] == with_input["instruction"] + "\n\n" + with_input["input"]
    # shard_mb is honoured for structured files (#17.18): 3146 records of ~1.6 MiB → 4+ shards
    shards = [s for s in Dataset(tmp_path / "raw").manifest()["shards"] if "gpteacher" in s["path"]]
    assert len(shards) >= 4 and sum(s["rows"] for s in shards) == 3146


def test_shard_mb_bounds_shards_of_a_large_jsonl(shared_data, tmp_path, local_engine):
    lines = gzip.decompress((shared_data / "instruct" / "gsm8k_train.jsonl.gz").read_bytes())
    path = tmp_path / "big.jsonl"
    path.write_bytes(lines * 4)  # 29,892 records, ~15 MiB of text
    frame, _, _ = fetch(tmp_path / "out", local_engine,
                        FilesSource(glob=[str(path)], record_kind="instruction", shard_mb=1))
    shards = Dataset(tmp_path / "out").manifest()["shards"]
    assert frame.height == 4 * 7473 and len(shards) >= 10
    assert max(s["bytes"] for s in shards) < 1 << 20  # one shard per MiB of rows, compressed below it


def test_chat_layouts_and_every_rejection_reason(tmp_path, local_engine):
    good = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}]
    _write_jsonl(tmp_path / "openai.jsonl", [
        {"messages": good, "id": "a"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Again"},
                      {"role": "assistant", "content": "Yes"}], "id": "b"},
        {"messages": [{"role": "user", "content": "Hi"}], "id": "c"},
        {"messages": [], "id": "d"},
    ])
    (tmp_path / "sharegpt.json").write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
        {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": ""}]},
    ]))
    openai = FilesSource(glob=[str(tmp_path / "openai.jsonl")], record_kind="chat", name="openai")
    sharegpt = FilesSource(glob=[str(tmp_path / "sharegpt.json")], record_kind="chat", format="sharegpt", name="sg")
    assert sharegpt.record_format == "sharegpt" and sharegpt.format == "auto"
    frame, rejected, result = fetch(tmp_path / "raw", local_engine, openai, sharegpt)
    assert frame.height == 2 and set(frame["kind"]) == {"chat"}
    assert frame.filter(pl.col("source") == "openai")["messages"].to_list() == [good]
    assert frame.filter(pl.col("source") == "sg")["text"].to_list() == ["2+2?\n\n4"]
    reasons = {(Path(f).name, line): reason for f, line, reason in rejected.select("file", "line", "reason").iter_rows()}
    assert reasons == {
        ("openai.jsonl", 2): "chat: turn 2 role 'user' follows 'user'",
        ("openai.jsonl", 3): "chat: last turn 1 is 'user', not 'assistant'",
        ("openai.jsonl", 4): "chat: no messages",
        ("sharegpt.json", 2): "chat: turn 2 (assistant) is empty",
    }
    record = json.loads(rejected.filter(pl.col("line") == 2, pl.col("file").str.ends_with(".jsonl"))["record"][0])
    assert record["id"] == "b" and record["messages"][1] == {"role": "user", "content": "Again"}
    assert result.rows_in == 6 and result.rows_out == 2 and sum(result.dropped.values()) == 4


def test_invalid_instruction_records_are_rejected_and_strict_fails(tmp_path, local_engine):
    path = _write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "Name a colour.", "completion": "Blue."},
        {"prompt": "Name a fruit.", "completion": "  "},
        {"prompt": "", "completion": "orphan"},
    ])
    frame, rejected, result = fetch(tmp_path / "raw", local_engine,
                                    FilesSource(glob=[str(path)], record_kind="instruction"))
    assert frame["prompt"].to_list() == ["Name a colour."]
    assert rejected.sort("line").select("line", "reason").rows() == [
        (2, "instruction: empty response"), (3, "instruction: empty prompt")]
    assert result.dropped == {"instruction: empty response": 1, "instruction: empty prompt": 1}
    with pytest.raises(FilesError, match=r"pairs.jsonl:2: instruction: empty response"):
        fetch(tmp_path / "strict", local_engine, FilesSource(glob=[str(path)], record_kind="instruction", strict=True))


def test_text_field_holding_messages_is_a_clear_error(tmp_path, local_engine):
    """#16: `--text-field messages` crashed with `cannot cast List type ... to String`."""
    path = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "Hi"},
                                                                 {"role": "assistant", "content": "Hello"}]}])
    with pytest.raises(FilesError, match=r"chat.jsonl: text field 'messages' holds conversations .* --kind chat"):
        fetch(tmp_path / "raw", local_engine, FilesSource(glob=[str(path)], text_field="messages"))
    frame, _, _ = fetch(tmp_path / "chat", local_engine, FilesSource(glob=[str(path)], record_kind="chat"))
    assert frame["text"].to_list() == ["Hi\n\nHello"]


def test_options_refuse_a_layout_that_cannot_give_the_kind():
    with pytest.raises(ValueError, match="use record_kind = chat"):
        FilesSource(glob=["x.jsonl"], record_kind="instruction", record_format="openai")
    with pytest.raises(ValueError, match="needs record_kind = instruction or chat"):
        FilesSource(glob=["x.jsonl"], format="alpaca")


# -- #17: rows lost or changed without a word ---------------------------------------------------
def test_ragged_csv_row_goes_to_rejected_with_its_line(tmp_path, local_engine):
    """#17.5: `3,too,many,fields,here` became text=too, label=many and the counts said 5 = 5."""
    path = tmp_path / "ragged.csv"
    path.write_bytes(b'id,text,label\n1,first,a\n2,"two\nlines",b\n3,too,many,fields,here\n4,four,c\n5,five,d\n')
    frame, rejected, result = fetch(tmp_path / "docs", local_engine, FilesSource(glob=[str(path)], id_field="id"))
    assert frame.sort("text")["text"].to_list() == ["first", "five", "four", "two\nlines"]
    assert "too" not in frame["text"].to_list() and "many" not in frame["label"].to_list()
    assert rejected.select("file", "line", "reason", "record").rows() == [
        (str(path), 5, "ragged row: 5 fields, the header has 3", "3,too,many,fields,here")]
    assert (result.rows_in, result.rows_out) == (5, 4)
    with pytest.raises(FilesError, match=r"ragged.csv:5: ragged row: 5 fields, the header has 3"):
        fetch(tmp_path / "strict", local_engine, FilesSource(glob=[str(path)], strict=True))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_invalid_utf8_is_rejected_alike_in_csv_and_jsonl(fmt, tmp_path, local_engine):
    """#17.6: invalid UTF-8 became U+FFFD in CSV (clean then deleted it: café → caf) and failed
    the whole file in JSONL; now the row goes to rejected, the rest is read."""
    if fmt == "csv":
        data, bad_line = b"text,label\ncaf\xc3\xa9 ok,a\ncaf\xe9 latin,b\nplain,c\n", 3
    else:
        data, bad_line = b'{"text":"caf\xc3\xa9 ok"}\n{"text":"caf\xe9 latin"}\n{"text":"plain"}\n', 2
    path = tmp_path / f"mixed.{fmt}"
    path.write_bytes(data)
    frame, rejected, result = fetch(tmp_path / "docs", local_engine, FilesSource(glob=[str(path)]))
    assert sorted(frame["text"]) == ["café ok", "plain"]
    assert not any("\ufffd" in t for t in frame["text"])
    (line, reason, record), = rejected.select("line", "reason", "record").rows()
    assert line == bad_line and "invalid UTF-8" in reason and "0xe9" in reason
    assert "caf\\xe9 latin" in record and "\ufffd" not in record
    assert (result.rows_in, result.rows_out) == (3, 2)


def test_one_bad_jsonl_line_does_not_fail_the_file(tmp_path, local_engine):
    """#17.8: one bad line failed the whole file with `Syntax at character 0` and no line."""
    path = tmp_path / "docs.jsonl.gz"
    lines = [json.dumps({"text": f"record {i}", "label": "x"}) for i in range(1000)]
    lines[499] = '{"text": "cut off'
    lines[700] = "42"
    path.write_bytes(gzip.compress(("\n".join(lines[:300]) + "\n\n" + "\n".join(lines[300:]) + "\n").encode()))
    frame, rejected, result = fetch(tmp_path / "docs", local_engine, FilesSource(glob=[str(path)]))
    assert frame.height == 998
    # the blank line after line 300 shifts the later lines by one
    assert rejected.sort("line").select("line", "reason").rows() == [
        (501, "invalid JSON at column 10: Unterminated string starting at"),
        (702, "not a JSON object (a JSON int)")]
    assert (result.rows_in, result.rows_out) == (1000, 998)
    with pytest.raises(FilesError, match=r"docs.jsonl.gz:501: invalid JSON"):
        fetch(tmp_path / "strict", local_engine, FilesSource(glob=[str(path)], strict=True))


def test_empty_files_are_zero_rows(tmp_path, local_engine):
    """#17.8: empty .jsonl/.csv/.parquet files aborted the stage."""
    for name in ("a.jsonl", "b.csv", "c.parquet", "d.json"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "e.csv").write_text("text,label\n")  # a header and nothing else
    (tmp_path / "f.json").write_text("[]")
    _write_jsonl(tmp_path / "g.jsonl", [{"text": "the only row"}])
    frame, rejected, result = fetch(tmp_path / "docs", local_engine, FilesSource(glob=[str(tmp_path / "*.*")]))
    assert frame["text"].to_list() == ["the only row"]
    assert rejected.height == 0
    assert result.details["sources"]["files00:files"]["files"] == 7


def test_parquet_chats_resume_and_rerun_byte_identical(tmp_path, local_engine):
    good = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    pl.DataFrame({"messages": [good, good[:1], good + good]}).write_parquet(tmp_path / "chats.parquet")
    _write_jsonl(tmp_path / "more.jsonl", [{"messages": good}])
    with open(tmp_path / "more.jsonl", "a") as handle:
        handle.write('{"messages": [}\n')
    source = FilesSource(glob=[str(tmp_path / "chats.parquet"), str(tmp_path / "more.jsonl")], record_kind="chat")
    frame, rejected, result = fetch(tmp_path / "a" / "raw", local_engine, source)
    assert frame.height == 3 and frame["messages"].to_list()[1] == good + good
    assert sorted(rejected.select(pl.col("file").str.extract(r"(\w+\.\w+)$"), "line", "reason").rows()) == [
        ("chats.parquet", 2, "chat: last turn 1 is 'user', not 'assistant'"),
        ("more.jsonl", 2, "invalid JSON at column 15: Expecting value")]
    manifests = {name: Dataset(tmp_path / "a" / name).manifest()["content_sha256"] for name in ("raw", "rejected/raw")}
    _, _, again = fetch(tmp_path / "a" / "raw", local_engine, source)
    assert again.details["sources"]["files00:files"]["files_resumed"] == 2
    assert {n: Dataset(tmp_path / "a" / n).manifest()["content_sha256"] for n in manifests} == manifests
    fetch(tmp_path / "b" / "raw", local_engine, source)  # a fresh run elsewhere: the same bytes
    for name in manifests:
        shards = sorted(p.relative_to(tmp_path / "a" / name) for p in (tmp_path / "a" / name).rglob("*.parquet"))
        assert shards and all((tmp_path / "a" / name / s).read_bytes() == (tmp_path / "b" / name / s).read_bytes()
                              for s in shards)


def test_the_command_line_reads_kinds_and_names_a_bad_line(shared_data, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli

    def pipeline_cli(*args: str):
        return CliRunner().invoke(cli, list(args), prog_name="pipeline")

    roleplay = str(shared_data / "instruct" / "gpteacher_roleplay.json.gz")
    out = pipeline_cli("fetch", "files", "--glob", roleplay, "--kind", "chat", "--format", "alpaca",
                       "--workers", "0", "--output", str(tmp_path / "raw"))
    assert out.exit_code == 0, out.output
    frame = Dataset(tmp_path / "raw").scan().collect()
    assert frame.height == 3146 and set(frame["kind"]) == {"chat"}
    assert {tuple(m["role"] for m in ms) for ms in frame["messages"].to_list()} == {("user", "assistant")}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": \n')
    out = pipeline_cli("fetch", "files", "--glob", str(bad), "--kind", "instruction", "--strict",
                       "--workers", "0", "--output", str(tmp_path / "strict"))
    assert out.exit_code == 3 and f"{bad}:2: invalid JSON at column 29" in out.output
    assert "Traceback" not in out.output


def test_text_and_instruction_files_share_one_dataset(tmp_path, local_engine):
    texts = _write_jsonl(tmp_path / "docs.jsonl", [{"text": "A plain document.", "label": "news"}])
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Say hi.", "response": "Hi."}])
    frame, _, result = fetch(tmp_path / "raw", local_engine, FilesSource(glob=[str(texts)], name="docs"),
                             FilesSource(glob=[str(pairs)], record_kind="instruction", name="pairs"))
    assert result.rows_out == 2 and frame.schema["messages"] == MESSAGES
    rows = {r["kind"]: r for r in frame.iter_rows(named=True)}
    assert (rows["text"]["text"], rows["text"]["label"], rows["text"]["prompt"]) == ("A plain document.", "news", None)
    assert (rows["instruction"]["text"], rows["instruction"]["label"]) == ("Say hi.\n\nHi.", None)


def test_csv_lines_count_blank_lines_and_quoted_line_breaks(tmp_path, local_engine):
    path = tmp_path / "pairs.csv"
    path.write_bytes(b'\nprompt,completion\r\nSay hi,Hi\r\n\r\nCount,"one\r\n\r\ntwo"\r\n\r\n\r\n'
                     b'Spell it,caf\xe9\r\nToo,many,fields\r\nEmpty,\r\nLast,one\r\n')
    frame, rejected, result = fetch(tmp_path / "raw", local_engine, FilesSource(glob=[str(path)], record_kind="instruction"))
    assert frame["prompt"].to_list() == ["Say hi", "Count", "Last"]
    assert rejected.sort("line").select("line", "reason").rows() == [
        (10, "invalid UTF-8 in field 'completion': byte 0xe9 at position 4"),
        (11, "ragged row: 3 fields, the header has 2"),
        (12, "instruction: empty response"),
    ]
    assert (result.rows_in, result.rows_out) == (6, 3)


def test_strict_error_crosses_dask_workers_as_bad_input(tmp_path, dask_engine):
    path = tmp_path / "ragged.csv"
    path.write_bytes(b"text,label\nfine,a\ntoo,many,fields\n")
    with pytest.raises(FilesError, match=r"ragged.csv:3: ragged row: 3 fields, the header has 2") as info:
        fetch(tmp_path / "docs", dask_engine, FilesSource(glob=[str(path)], strict=True))
    assert info.value.exit_code == 3
