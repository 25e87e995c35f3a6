"""The error model through the real `pipeline` command: each kind's message and exit code, and no
traceback for a user's error (pipeline.errors, docs/errors.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

FILTERS = '''
import polars as pl

import pipeline


@pipeline.filter(reason="everything")
def drop_all() -> pl.Expr:
    return pl.lit(False)


@pipeline.filter(reason="never")
def text_as_number() -> pl.Expr:
    return pl.col("text").cast(pl.Int64) > 0   # fine on the empty check frame, fails on the rows


@pipeline.filter(reason="slow")
def slow(seconds: float = 1.0) -> pl.Expr:
    return pl.col("text").map_batches(lambda s: (__import__("time").sleep(seconds), s.is_not_null())[1],
                                      return_dtype=pl.Boolean)
'''


def pipeline_run(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture()
def job_folder(make_licences, tmp_path) -> Path:
    make_licences(tmp_path / "docs", shards=2)
    (tmp_path / "userfilters.py").write_text(FILTERS)
    return tmp_path


def write_job(folder: Path, use: str, options: str = "{}") -> Path:
    job = folder / "job.toml"
    job.write_text(f'[job]\ninput = "{folder / "docs"}"\nsteps = ["f"]\n[engine]\nworkers = 0\n'
                   f'[[custom]]\nuse = "{use}"\nname = "f"\noptions = {options}\n')
    return job


def one_paragraph_error(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    return done.stderr


def test_bad_job_file_exits_2_naming_the_key(job_folder):
    job = job_folder / "bad.toml"
    job.write_text(f'[job]\ninput = "{job_folder / "docs"}"\n[clean]\nmin_wrods = 3\n')
    done = pipeline_run("run", str(job), cwd=job_folder)
    assert done.returncode == 2
    assert "min_wrods" in one_paragraph_error(done)


def test_bad_option_exits_2(job_folder):
    done = pipeline_run("clean", "--input", "docs", "--output", "out", "--min-words", "-1", "--workers", "0", cwd=job_folder)
    assert done.returncode == 2
    assert "min_words" in one_paragraph_error(done)


def test_missing_column_exits_3_naming_column_dataset_and_what_was_found(job_folder):
    done = pipeline_run("clean", "--input", "docs", "--output", "out", "--text-column", "body", "--workers", "0",
                        cwd=job_folder)
    assert done.returncode == 3
    message = one_paragraph_error(done)
    assert "`body`" in message and "docs" in message and "id: String, title: String, text: String" in message
    assert not (job_folder / "out").exists() or not list((job_folder / "out").glob("*.parquet"))


def test_missing_input_exits_3(job_folder):
    done = pipeline_run("extract", "--input", "nowhere", "--output", "out", "--workers", "0", cwd=job_folder)
    assert done.returncode == 3
    assert "nowhere" in one_paragraph_error(done)


def test_failing_shard_exits_4_naming_the_shard(job_folder):
    done = pipeline_run("run", str(write_job(job_folder, "userfilters:text_as_number")), "--out", "out", cwd=job_folder)
    assert done.returncode == 4
    assert done.stderr.startswith("error: shard ") and "part-0000" in done.stderr
    assert "InvalidOperationError" in done.stderr or "conversion" in done.stderr


def test_empty_result_exits_5_with_the_reason(job_folder):
    done = pipeline_run("run", str(write_job(job_folder, "userfilters:drop_all")), "--out", "out", cwd=job_folder)
    assert done.returncode == 5
    message = one_paragraph_error(done)
    assert "f produced 0 rows from 728" in message and "everything" in message


def test_interrupt_exits_130_and_keeps_finished_shards(job_folder):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    job = write_job(job_folder, "userfilters:slow", "{ seconds = 2.0 }")
    running = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(job), "--out", "out"], cwd=job_folder,
                               env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    progress = job_folder / "out" / "f" / "_progress"
    deadline = time.monotonic() + 300
    while not list(progress.glob("*.json")) and time.monotonic() < deadline and running.poll() is None:
        time.sleep(0.05)
    running.send_signal(signal.SIGINT)
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert len(list(progress.glob("*.json"))) >= 1
