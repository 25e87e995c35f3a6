"""Outputs a reader can trust: the _SUCCESS marker, temp files swept, a full disk blamed on the
output (a real 2 MiB tmpfs), one run per output folder (two real processes), private outputs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset import (
    MANIFEST,
    SUCCESS,
    Dataset,
    DatasetError,
    OutputWriteError,
    StageOutput,
    TaskRecord,
    write_shard,
)
from pipeline.lock import OutputLocked, output_lock, private_outputs

REPO = Path(__file__).resolve().parent.parent


def toy_run(root: Path, tasks: list[str], fail_at: int | None = None) -> StageOutput:
    out = StageOutput("toy", {"a": 1}, [], {"main": root}, fresh=False)
    todo, done = out.pending(tasks)
    written = []
    for index, task in enumerate(todo):
        if index == fail_at:
            raise RuntimeError("crash")
        info = out.write("main", pl.DataFrame({"id": [task], "text": ["x" * 10]}), f"{task}.parquet")
        written.append(out.commit(TaskRecord(task, "", {"main": [info]}, {"rows_out": 1})))
    out.finalize(done + written)
    return out


def test_success_marker_is_written_last_and_a_partial_folder_is_refused_as_input(tmp_path):
    root = tmp_path / "clean"
    with pytest.raises(RuntimeError):
        toy_run(root, ["t0", "t1", "t2"], fail_at=2)
    # final-named shards are there, but no manifest and no marker: a reader can tell
    assert sorted(p.name for p in root.glob("*.parquet")) == ["t0.parquet", "t1.parquet"]
    assert not (root / SUCCESS).exists() and not Dataset(root).complete()
    with pytest.raises(DatasetError, match="is incomplete: the stage writing it did not finish"):
        Dataset(root).require_shards()
    toy_run(root, ["t0", "t1", "t2"])
    assert (root / SUCCESS).exists() and Dataset(root).complete()
    assert (root / SUCCESS).stat().st_mtime_ns >= (root / MANIFEST).stat().st_mtime_ns
    assert len(Dataset(root).require_shards()) == 3
    # a re-run that must redo a task takes the marker away until it finishes again
    (root / "t1.parquet").unlink()
    out = StageOutput("toy", {"a": 1}, [], {"main": root})
    todo, _ = out.pending(["t0", "t1", "t2"])
    assert todo == ["t1"] and not (root / SUCCESS).exists()


def test_temp_files_of_a_killed_run_are_swept_on_the_next_start(tmp_path):
    root = tmp_path / "clean"
    toy_run(root, ["t0"])
    leftovers = [root / f".t9.parquet.tmp-{uuid.uuid4().hex}", root / "sub" / f".index.html.tmp-{uuid.uuid4().hex}"]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a file")
    toy_run(root, ["t0"])
    assert not any(p.exists() for p in leftovers)
    assert (root / "t0.parquet").exists()


@pytest.fixture()
def full_disk(tmp_path):
    """A real 2 MiB tmpfs (needs root to mount; the machine this project runs on is)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; ENOSPC cannot be produced for real otherwise")
    mount = Path(f"/tmp/trust2-full-{uuid.uuid4().hex[:8]}")
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


def incompressible(rows: int) -> pl.DataFrame:
    return pl.DataFrame({"id": [str(i) for i in range(rows)], "text": [os.urandom(2000).hex() for _ in range(rows)]})


def test_a_full_disk_names_the_output_and_leaves_no_temp_file(full_disk):
    with pytest.raises(OutputWriteError, match=r"cannot write output .*trust2-full.*part-0\.parquet.*file system is full"):
        write_shard(incompressible(2000), full_disk / "clean", "part-0.parquet")
    assert list((full_disk / "clean").iterdir()) == []


def test_fetch_files_on_a_full_disk_blames_the_output_not_the_input(full_disk, tmp_path):
    from pipeline import fetch
    from pipeline.engine import Engine

    source = tmp_path / "records.jsonl"
    incompressible(2000).write_ndjson(source)
    options = fetch.Options(sources=[{"kind": "files", "glob": [str(source)]}])
    with pytest.raises(Exception) as failure:
        fetch.run([], full_disk / "raw", options, Engine(workers=0, progress=False))
    message = str(failure.value)
    assert "cannot write output" in message and str(full_disk / "raw") in message
    assert "cannot read as jsonl" not in message
    assert not list((full_disk / "raw").rglob(".*.tmp-*"))


HOLDER = textwrap.dedent("""
    import sys, time
    from pipeline.lock import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_a_second_run_on_a_locked_output_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLocked, match=rf"in use by another pipeline run \(pid {holder.pid}, started 20"):
            with output_lock(out):
                pass
        job = tmp_path / "job.toml"
        job.write_text(f'[job]\ninput = "{tmp_path}"\n[clean]\n')
        second = subprocess.run([sys.executable, "-m", "pipeline", "run", str(job), "--out", str(out),
                                 "--workers", "0"], capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode != 0
        assert f"in use by another pipeline run (pid {holder.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the lock with the killed process: never stale
    with output_lock(out) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_private_outputs_make_every_file_0600_and_folder_0700(tmp_path):
    with private_outputs(True):
        toy_run(tmp_path / "clean", ["t0"])
    for path in [tmp_path / "clean", *(tmp_path / "clean").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    previous = os.umask(0o022)
    try:
        toy_run(tmp_path / "shared", ["t0"])
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared" / "t0.parquet").stat().st_mode) == 0o644


@pytest.fixture()
def local_site():
    """A real HTTP server on 127.0.0.1 (a free port): a crawl without allow_private is refused."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def crawl_job(tmp_path: Path, seed: str, job_extra: str = "", stages: str = "[extract]\n[clean]\n[dedup]\n[features]\n") -> Path:
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "refused"\n{job_extra}[[fetch.sources]]\nkind = "crawl"\nseeds = ["{seed}"]\n{stages}')
    return job


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_refused_crawl_stops_the_job_with_the_refusal_not_a_traceback_later(tmp_path, local_site):
    out = tmp_path / "out"
    done = run_cli("run", str(crawl_job(tmp_path, local_site)), "--out", str(out), "--workers", "0")
    assert done.returncode != 0
    assert "extract produced 0 rows from 1 (dropped: fetch_error=1)" in done.stderr
    assert "fetch_error: refused: 127.0.0.1 is a private/loopback/link-local address (use --allow-private) (1 row)" \
        in done.stderr
    assert "allow_empty = true" in done.stderr
    assert "Traceback" not in done.stderr and "StopIteration" not in done.stderr
    assert not (out / "clean").exists() and not (out / "features").exists()  # nothing ran on 0 rows


def test_allow_empty_runs_on_and_private_makes_every_output_owner_only(tmp_path, local_site):
    out = tmp_path / "out"
    job = crawl_job(tmp_path, local_site, job_extra="allow_empty = true\nprivate = true\n",
                    stages="[extract]\n[clean]\n")
    done = run_cli("run", str(job), "--out", str(out), "--workers", "0")
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines() if "in=" in line] == ["fetch", "extract", "clean"]
    assert (out / "clean" / SUCCESS).exists() and Dataset(out / "clean").rows() == 0
    written = [out, *out.rglob("*")]
    assert len(written) > 10
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_taking_a_jobs_lock_sweeps_the_report_temp_files_a_kill_left(tmp_path):
    out = tmp_path / "out"
    leftover = out / "report" / f".index.html.tmp-{uuid.uuid4().hex}"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("<html>half")
    (out / "report" / "index.html").write_text("<html>whole</html>")
    with output_lock(out):
        assert not leftover.exists()
    assert (out / "report" / "index.html").read_text() == "<html>whole</html>"


def test_private_flag_reaches_files_the_dask_workers_write(tmp_path):
    raw = tmp_path / "raw"
    fetched = run_cli("fetch", "files", "--glob", str(REPO / "data" / "sms_spam.tsv"), "--text-field", "SMS",
                      "--label-field", "Label", "--output", str(raw), "--workers", "0")
    assert fetched.returncode == 0, fetched.stderr
    out = tmp_path / "private"
    cleaned = run_cli("clean", "--input", str(raw), "--output", str(out / "clean"), "--private", "--workers", "1",
                      "--min-words", "1")
    assert cleaned.returncode == 0, cleaned.stderr
    shards = list(out.rglob("*.parquet"))
    assert len(shards) == 2  # clean/ and rejected/clean/, each written by the worker process
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert stat.S_IMODE(next(raw.rglob("*.parquet")).stat().st_mode) == 0o644 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
