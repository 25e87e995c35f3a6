"""Instruction and chat records through a whole job: fetch → clean → dedup → split → report,
on the real GSM8K test set and GPTeacher, with the counts of every stage adding up."""

from __future__ import annotations

import json

import polars as pl

from pipeline.dataset import Dataset
from pipeline.records import MESSAGES
from pipeline.runner import run_job


def quiet(*_args, **_kwargs) -> None:
    pass


def test_records_run_through_clean_dedup_split_and_report(shared_data, tmp_path):
    chats = tmp_path / "chats.jsonl"
    good = [{"role": "user", "content": "Please explain why the sky looks blue on a clear day."},
            {"role": "assistant", "content": "Sunlight is scattered by the air, and blue light is scattered the most."}]
    chats.write_text("\n".join(json.dumps(r) for r in [
        {"messages": good},
        {"messages": good[:1]},  # ends with the user: rejected by fetch
        {"messages": [good[0], {"role": "assistant", "content": "Write to me at someone@example.com, and I will explain."}]},
    ]) + "\n")
    instruct = shared_data / "instruct"
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "records"
output = "{tmp_path / 'out'}"
stages = ["fetch", "clean", "dedup", "split", "report"]

[engine]
workers = 0

[[fetch.sources]]
kind = "files"
name = "gsm8k"
glob = ["{instruct / 'gsm8k_test.jsonl.gz'}"]
record_kind = "instruction"

[[fetch.sources]]
kind = "files"
name = "gpteacher"
glob = ["{instruct / 'gpteacher_roleplay.json.gz'}"]
record_kind = "instruction"
format = "alpaca"

[[fetch.sources]]
kind = "files"
name = "chats"
glob = ["{chats}"]
record_kind = "chat"

[clean]
min_words = 3
min_sentences = 0
min_punct_lines_ratio = 0.0
max_symbol_ratio = 0.5
min_alpha_words_ratio = 0.5
max_top_2gram_char_ratio = 1.0
max_top_3gram_char_ratio = 1.0
max_top_4gram_char_ratio = 1.0

[dedup]
key = "prompt"

[split]
ratios = "0.8,0.1,0.1"
""")
    results = {r.stage: r for r in run_job(job, echo=quiet)}
    fetch, clean, dedup, split = (results[s] for s in ("fetch", "clean", "dedup", "split"))
    assert (fetch.rows_in, fetch.rows_out) == (1319 + 3146 + 3, 1319 + 3146 + 2)
    assert fetch.dropped == {"chat: last turn N is '…', not '…'": 1}
    rejected_fetch = Dataset(tmp_path / "out" / "rejected" / "raw").scan().collect()
    assert rejected_fetch.select("line", "reason").rows() == [(2, "chat: last turn 1 is 'user', not 'assistant'")]
    assert clean.rows_in == fetch.rows_out and clean.rows_out + sum(clean.dropped.values()) == clean.rows_in
    assert dedup.rows_in == clean.rows_out and dedup.rows_out + sum(dedup.dropped.values()) == dedup.rows_in
    # the two valid chats ask the same question: keyed on the prompt, one of them is a duplicate
    assert dedup.dropped.get("exact_duplicate", 0) >= 1
    splits = Dataset(tmp_path / "out" / "splits").scan().collect()
    assert splits.height == split.rows_out == dedup.rows_out
    assert set(splits["split"]) == {"train", "val", "test"}
    assert splits.schema["messages"] == MESSAGES and set(splits["kind"]) == {"instruction", "chat"}
    chat = splits.filter(pl.col("kind") == "chat")
    assert chat.height == 1 and chat["messages"][0].to_list()[0]["role"] == "user"
    instruction = splits.filter(pl.col("kind") == "instruction")
    assert (instruction["text"] == instruction["prompt"] + "\n\n" + instruction["response"]).all()
    metrics = json.loads((tmp_path / "out" / "report" / "metrics.json").read_text())
    assert sum(s["rows"] for s in metrics["volume"]["by_split"].values()) == splits.height
    assert metrics["volume"]["datasets"]["rejected/raw"]["rows"] == 1


def test_instruct_recipe_reads_only_what_a_clone_holds(tmp_path, monkeypatch):
    """jobs/instruct.toml reads data/instruct/ (shipped with the repository, MIT); the whole job
    runs in tests/test_instruct_job.py, here fetch runs from a copy of jobs/ and data/ alone."""
    import shutil
    from pathlib import Path

    from pipeline.config import Job

    repo = Path(__file__).resolve().parent.parent
    clone = tmp_path / "clone"
    shutil.copytree(repo / "jobs", clone / "jobs")
    shutil.copytree(repo / "data", clone / "data")
    monkeypatch.chdir(clone)
    job = Job.load(Path("jobs/instruct.toml"))
    for eval_set in job.options("decontaminate").eval_sets:
        assert Path(eval_set.path).is_file(), eval_set.path
    results = {r.stage: r for r in run_job(Path("jobs/instruct.toml"), out=tmp_path / "out", echo=quiet,
                                           only=["fetch"], engine_overrides={"workers": 0})}
    assert (results["fetch"].rows_in, results["fetch"].rows_out) == (7473 + 3146, 7473 + 3146)
    raw = Dataset(tmp_path / "out" / "raw").scan().group_by("source").len().collect()
    assert dict(raw.iter_rows()) == {"gsm8k": 7473, "gpteacher": 3146}
