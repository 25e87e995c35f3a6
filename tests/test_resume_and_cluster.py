"""Crash and resume, and a real multi-process Dask cluster, through a real stage (clean).

The input is the SMS spam collection cut into many small shards in the document schema.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset import MANIFEST, Dataset, write_shard
from pipeline.hashing import doc_id

SHARDS = 48


@pytest.fixture(scope="module")
def sms_docs(shared_data, tmp_path_factory) -> Path:
    raw = pl.read_csv(shared_data / "labelled" / "sms_spam.tsv", separator="\t", quote_char=None,
                      has_header=True, new_columns=["label", "text"])
    docs = raw.with_row_index("row").with_columns(
        id=doc_id(pl.concat_str(pl.lit("sms:"), pl.col("row").cast(pl.String))),
        source=pl.lit("sms_spam"),
        url=pl.lit(None, pl.String),
        fetched_at=pl.lit(None, pl.Datetime("us", "UTC")),
        title=pl.lit(None, pl.String),
        meta=pl.lit("{}"),
    ).select("id", "source", "url", "fetched_at", "title", "text", "label", "meta")
    root = tmp_path_factory.mktemp("sms") / "docs"
    size = -(-docs.height // SHARDS)
    for i in range(SHARDS):
        write_shard(docs.slice(i * size, size), root, f"part-{i:05d}.parquet")
    return root


def pipeline_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def shard_digests(root: Path) -> dict[str, str]:
    manifest = json.loads((root / MANIFEST).read_text())
    return {s["path"]: s["sha256"] for s in manifest["shards"]}


def test_killed_stage_resumes_to_the_same_output(sms_docs, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(pipeline_cmd("clean", "--input", str(sms_docs), "--output", str(ref), "--workers", "0"),
                   check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(pipeline_cmd("clean", "--input", str(sms_docs), "--output", str(out), "--workers", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    progress = out / "_progress"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if progress.is_dir() and len(list(progress.glob("*.json"))) >= 3:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before_kill = len(list(progress.glob("*.json")))
    assert 3 <= finished_before_kill < SHARDS, "the kill must land mid-way for this test to mean anything"
    assert not (out / MANIFEST).exists()

    rerun = subprocess.run(pipeline_cmd("clean", "--input", str(sms_docs), "--output", str(out), "--workers", "0"),
                           check=True, capture_output=True, text=True, timeout=300)
    assert f"{finished_before_kill} shards resumed" in rerun.stdout
    assert shard_digests(out) == shard_digests(ref)  # byte-identical shards: nothing lost, nothing doubled
    got = Dataset(out).scan().collect().sort("id")
    want = Dataset(ref).scan().collect().sort("id")
    assert got.equals(want)
    assert got["id"].n_unique() == got.height
    rejected_ref, rejected_out = tmp_path / "rejected" / "ref", tmp_path / "rejected" / "out"
    if rejected_ref.exists():
        assert Dataset(rejected_out).scan().collect().sort("id").equals(Dataset(rejected_ref).scan().collect().sort("id"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def dask_cluster(workers: int, memory_limit: str = "2GiB", env: dict[str, str] | None = None):
    """`dask scheduler` and `workers` `dask worker` processes on 127.0.0.1, as a user would start
    them; yields the scheduler's address once every worker has joined."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).parent / "dask")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    for _ in range(workers):
        procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--memory-limit", memory_limit, "--no-dashboard", "--host", "127.0.0.1"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    from distributed import Client

    try:
        with Client(address, timeout="60s") as client:  # waits for the scheduler to listen
            if workers:
                client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture()
def external_cluster():
    """A scheduler and two workers with 2 GiB each."""
    with dask_cluster(2) as address:
        yield address


def test_external_cluster_gives_the_local_output(sms_docs, tmp_path, external_cluster):
    local, remote = tmp_path / "local", tmp_path / "remote"
    subprocess.run(pipeline_cmd("clean", "--input", str(sms_docs), "--output", str(local), "--workers", "2"),
                   check=True, capture_output=True, timeout=300)
    done = subprocess.run(pipeline_cmd("clean", "--input", str(sms_docs), "--output", str(remote),
                                       "--scheduler", external_cluster),
                          check=True, capture_output=True, text=True, timeout=300)
    assert "in=5574" in done.stdout
    assert shard_digests(remote) == shard_digests(local)


def test_a_cluster_without_workers_fails_clearly_instead_of_hanging():
    """A scheduler whose workers are gone (OOM-killed, killed by hand) must not hang a stage."""
    from pipeline.engine import Engine

    with dask_cluster(0) as address:
        engine = Engine(scheduler=address, progress=False, no_worker_timeout=3)
        engine.start()
        started = time.time()
        with pytest.raises(RuntimeError, match="no Dask worker alive"):
            engine.map(math.factorial, [1, 2, 3], desc="probe")  # importable by the scheduler too
        assert time.time() - started < 60
        engine.close()


@pytest.mark.timeout(300)
def test_a_cluster_whose_workers_all_pause_fails_clearly_instead_of_hanging():
    """An external worker over its pause fraction (80 % of --memory-limit) runs nothing until it
    frees memory; memory it keeps never frees. A map, and a Dask collection computed under
    `watching` (dask-ml's fit), must end with an error that says so."""
    import dask.array as da
    from engine_tasks import hold_memory

    from pipeline.engine import Engine

    # the scheduler unpickles the task graph too: both import the tests' task module
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    with dask_cluster(1, "400MiB", env) as address:
        engine = Engine(scheduler=address, progress=False, no_worker_timeout=3)
        [resident] = engine.map(hold_memory, [0.85])
        assert resident > 0.8 * 400 * 2**20
        deadline = time.time() + 30  # the worker's memory monitor pauses it within a moment
        while [w["status"] for w in engine.client.scheduler_info()["workers"].values()] != ["paused"]:
            assert time.time() < deadline, "the worker never paused"
            time.sleep(0.2)
        with pytest.raises(RuntimeError, match="all 1 Dask workers paused"):
            engine.map(math.factorial, [1, 2, 3], desc="probe")
        with engine.watching("probe"), pytest.raises(RuntimeError, match="all 1 Dask workers paused"):
            da.ones(1000, chunks=100).sum().compute()
        engine.close()
