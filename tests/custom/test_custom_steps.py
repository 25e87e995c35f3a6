"""User-defined filters and stages in a job: examples/custom.toml end to end, drop accounting,
the report, and a custom stage resumed after a real kill -9 with byte-identical output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

import pipeline
from pipeline.custom import FilterStage
from pipeline.dataset import Dataset

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def pipeline_command(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def example_job(tmp_path: Path, input: Path) -> Path:
    """examples/custom.toml and the filters beside it, reading `input`, writing tmp_path/out."""
    shutil.copy(EXAMPLES / "filters.py", tmp_path / "filters.py")
    text = (EXAMPLES / "custom.toml").read_text()
    text = text.replace('input = "out/demo/clean"', f'input = "{input}"').replace('output = "out/custom"', 'output = "out"')
    job = tmp_path / "custom.toml"
    job.write_text(text)
    return job


def find_counts(value, key: str) -> list:
    """Every value stored under `key` anywhere in a JSON document."""
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == key] + [x for v in value.values() for x in find_counts(v, key)]
    if isinstance(value, list):
        return [x for v in value for x in find_counts(v, key)]
    return []


def test_example_job_runs_and_its_drops_are_counted_and_reported(licences, tmp_path):
    job = example_job(tmp_path, licences)
    done = pipeline_command("run", str(job), cwd=tmp_path)
    stdout, stderr = done.communicate(timeout=900)
    assert done.returncode == 0, stderr
    results = {r["stage"]: r for r in json.loads((tmp_path / "out" / "_job.json").read_text())["results"]}
    assert list(results) == ["no_code_blocks", "public_modules", "longest_lines", "clean_strict", "report"]

    # the same rules in plain Python, row by row
    docs = pl.read_parquet(licences).to_dicts()
    prompts = [d for d in docs if sum(line.startswith(">>>") for line in d["text"].split("\n")) > 5]
    after_code = [d for d in docs if d not in prompts]
    private = [d for d in after_code if "module _" in d["title"]]
    after_private = [d for d in after_code if d not in private]
    long_lines = [d for d in after_private if max(len(line) for line in d["text"].split("\n")) > 400]
    assert len(long_lines) > 50  # licences are paragraphs on one line: the rule has work to do
    for name, dropped, reason in [("no_code_blocks", prompts, "code_block"), ("public_modules", private, "private_module"),
                                  ("longest_lines", long_lines, "long_line")]:
        result = results[name]
        assert result["dropped"] == ({reason: len(dropped)} if dropped else {}), name
        assert result["rows_in"] == result["rows_out"] + len(dropped)
        rejected = tmp_path / "out" / "rejected" / name
        if dropped:
            rows = Dataset(rejected).scan().collect()
            assert sorted(rows["id"]) == sorted(d["id"] for d in dropped)
            assert set(rows["reason"]) == {reason}
    assert results["longest_lines"]["rows_out"] == len(after_private) - len(long_lines)
    kept = pl.scan_parquet(str(tmp_path / "out" / "longest_lines" / "*.parquet")).collect()
    assert kept["longest_line"].max() <= 400
    strict = results["clean_strict"]
    assert strict["rows_in"] == results["longest_lines"]["rows_out"]
    assert strict["rows_in"] == strict["rows_out"] + sum(strict["dropped"].values())
    assert strict["dropped"].get("gopher_min_words", 0) > 0  # min_words = 200 from the job file

    metrics = json.loads((tmp_path / "out" / "report" / "metrics.json").read_text())
    assert len(long_lines) in find_counts(metrics, "long_line")
    assert "long_line" in (tmp_path / "out" / "report" / "index.html").read_text()


def test_a_filter_is_a_plain_function_and_a_stage(licences, tmp_path, local_engine, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import filters  # examples/filters.py, as a user imports their own module

    frame = pl.read_parquet(licences)
    keep = frame.filter(filters.public_modules()).height
    assert keep == frame.height  # a licence title never names a private module
    stage = FilterStage(filters.no_code_blocks, FilterStage.Options(params={"max_prompts": 0}))
    result = stage.run([licences], tmp_path / "kept", local_engine)
    assert (result.rows_in, result.rows_out, result.dropped) == (frame.height, frame.height, {})


def test_custom_stage_resumes_after_kill_9_with_identical_output(make_licences, tmp_path):
    source = make_licences(tmp_path / "eight", shards=8)
    (tmp_path / "slowstage.py").write_text('''
import time

import polars as pl

from pipeline import Options, ShardOutput, Stage


class SlowUpper(Stage):
    name = "slow_upper"

    class Options(Options):
        seconds: float = 1.0
        """Pause per shard, so a test can kill the run in the middle."""

    def transform(self, frame, plan):
        time.sleep(plan.seconds)
        return ShardOutput({"main": frame.with_columns(pl.col("text").str.to_uppercase()).collect()})
''')
    job = tmp_path / "slow.toml"
    job.write_text(f'[job]\ninput = "{source}"\nsteps = ["slow_upper"]\n[engine]\nworkers = 0\n'
                   '[[custom]]\nuse = "slowstage:SlowUpper"\noptions = { seconds = 1.0 }\n')
    killed = pipeline_command("run", str(job), "--out", "killed", cwd=tmp_path, start_new_session=True)
    progress = tmp_path / "killed" / "slow_upper" / "_progress"
    deadline = time.monotonic() + 300
    while len(list(progress.glob("*.json"))) < 2 and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    finished_before_kill = len(list(progress.glob("*.json")))
    assert 2 <= finished_before_kill < 8
    assert not (tmp_path / "killed" / "slow_upper" / "_manifest.json").exists()

    resumed = pipeline_command("run", str(job), "--out", "killed", cwd=tmp_path)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    result = json.loads((tmp_path / "killed" / "_job.json").read_text())["results"][0]
    assert result["skipped_tasks"] >= finished_before_kill and result["rows_out"] == 728

    whole = pipeline_command("run", str(job), "--out", "whole", cwd=tmp_path)
    _, stderr = whole.communicate(timeout=600)
    assert whole.returncode == 0, stderr

    def shards(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("*.parquet"))}

    assert shards(tmp_path / "killed" / "slow_upper") == shards(tmp_path / "whole" / "slow_upper")
    assert len(shards(tmp_path / "whole" / "slow_upper")) == 8
    manifest = json.loads((tmp_path / "killed" / "slow_upper" / "_manifest.json").read_text())
    assert manifest["content_sha256"] == json.loads(
        (tmp_path / "whole" / "slow_upper" / "_manifest.json").read_text())["content_sha256"]


def test_bad_custom_tables_are_job_errors(licences, tmp_path):
    from pipeline.config import Job
    from pipeline.errors import JobError

    cases = {
        '[[custom]]\nuse = "clean"\n': "needs its own `name`",
        '[[custom]]\nuse = "nosuchmodule:thing"\n': "cannot load it",
        '[[custom]]\nuse = "polars:col"\n': "neither a @pipeline.filter function nor",
        '[job]\nsteps = ["clean", "mystery"]\n[[custom]]\nuse = "clean"\nname = "clean_2"\n': "unknown step(s) ['mystery']",
    }
    for body, message in cases.items():
        job = tmp_path / "job.toml"
        text = body if body.startswith("[job]") else "[job]\n" + body
        job.write_text(text.replace("[job]\n", f'[job]\ninput = "{licences}"\n', 1))
        try:
            Job.load(job)
        except JobError as error:
            assert message in str(error), (body, str(error))
        else:
            raise AssertionError(f"no JobError for {body!r}")


def test_pipeline_filter_needs_a_reason():
    from pipeline.errors import JobError

    try:
        pipeline.filter(reason="")
    except JobError as error:
        assert "drop reason" in str(error)
    else:
        raise AssertionError("an empty reason was accepted")


def test_editing_a_custom_stage_class_redoes_it_instead_of_resuming(licences, tmp_path, local_engine, monkeypatch):
    """A user's Stage subclass is fingerprinted by its source as a filter is: the same class
    resumes (every shard skipped), an edited one runs again and writes what the new code says."""
    import importlib

    module = tmp_path / "edited_stage.py"
    code = '''
import polars as pl

from pipeline import ShardOutput, Stage


class Shout(Stage):
    name = "shout"

    def transform(self, frame, plan):
        return ShardOutput({"main": frame.with_columns(pl.col("text").str.to_uppercase()).collect()})
'''
    module.write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    edited_stage = importlib.import_module("edited_stage")
    first = edited_stage.Shout().run([licences], tmp_path / "out", local_engine)
    again = edited_stage.Shout().run([licences], tmp_path / "out", local_engine)
    shards = len(list((tmp_path / "out").glob("*.parquet")))
    assert shards > 0 and first.skipped_tasks == 0 and again.skipped_tasks == shards

    module.write_text(code.replace("to_uppercase", "to_lowercase"))
    edited_stage = importlib.reload(edited_stage)
    edited = edited_stage.Shout().run([licences], tmp_path / "out", local_engine)
    assert edited.skipped_tasks == 0
    texts = Dataset(tmp_path / "out").scan().collect()["text"]
    assert (texts == texts.str.to_lowercase()).all() and not (texts == texts.str.to_uppercase()).all()
