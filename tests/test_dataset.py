"""The dataset layer: atomic shards, manifests, fingerprints and resume."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq

from pipeline.dataset import (
    MANIFEST,
    Dataset,
    StageOutput,
    TaskRecord,
    file_sha256,
    write_shard,
)


def frame(n: int, offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"d{i}" for i in range(offset, offset + n)], "text": ["x" * i for i in range(n)]})


def test_write_shard_is_atomic_and_described(tmp_path):
    info = write_shard(frame(5), tmp_path, "part-0.parquet")
    assert info.rows == 5
    assert info.sha256 == file_sha256(tmp_path / "part-0.parquet")
    assert info.bytes == (tmp_path / "part-0.parquet").stat().st_size
    # no temporary file is left behind, and nothing but the shard is there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-0.parquet"]


def test_same_frame_gives_byte_identical_shards(tmp_path):
    a = write_shard(frame(50), tmp_path / "a", "p.parquet")
    b = write_shard(frame(50), tmp_path / "b", "p.parquet")
    assert a.sha256 == b.sha256


def test_hive_partitions_are_read_back(tmp_path):
    write_shard(frame(3), tmp_path, "source=web/date=2026-11-01/part-0.parquet")
    write_shard(frame(2, 3), tmp_path, "source=api/date=2026-11-02/part-0.parquet")
    out = pl.scan_parquet(str(tmp_path / "**/*.parquet"), hive_partitioning=True).collect()
    assert out.height == 5
    assert sorted(out["source"].unique().to_list()) == ["api", "web"]
    via_dataset = Dataset(tmp_path).scan().collect()
    assert via_dataset.height == 5 and "source" in via_dataset.columns


def _run(tmp_path, options, tasks, fresh=False, fail_at=None):
    """A miniature stage: each task writes one shard; returns (output, records written now)."""
    out = StageOutput("toy", options, [], {"main": tmp_path / "out"}, fresh=fresh)
    todo, done = out.pending(tasks)
    written = []
    for index, task in enumerate(todo):
        if fail_at is not None and index == fail_at:
            raise RuntimeError("crash")
        info = out.write("main", frame(3, offset=int(task[1:]) * 10), f"{task}.parquet")
        written.append(out.commit(TaskRecord(task, "", {"main": [info]}, {"rows_out": 3})))
    out.finalize(done + written)
    return out, written


def test_resume_skips_finished_tasks(tmp_path):
    tasks = ["t0", "t1", "t2", "t3"]
    try:
        _run(tmp_path, {"a": 1}, tasks, fail_at=2)
    except RuntimeError:
        pass
    assert not (tmp_path / "out" / MANIFEST).exists()  # an unfinished run has no manifest
    _, written = _run(tmp_path, {"a": 1}, tasks)
    assert [r.task for r in written] == ["t2", "t3"]
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["rows"] == 12 and len(manifest["shards"]) == 4
    for shard in manifest["shards"]:
        assert file_sha256(tmp_path / "out" / shard["path"]) == shard["sha256"]
        assert pq.ParquetFile(tmp_path / "out" / shard["path"]).metadata.num_rows == shard["rows"]
    assert [c["name"] for c in manifest["schema"]] == ["id", "text"]


def test_changed_options_or_fresh_rerun_everything(tmp_path):
    tasks = ["t0", "t1"]
    _run(tmp_path, {"a": 1}, tasks)
    _, again = _run(tmp_path, {"a": 1}, tasks)
    assert again == []
    _, changed = _run(tmp_path, {"a": 2}, tasks)
    assert [r.task for r in changed] == tasks
    _, forced = _run(tmp_path, {"a": 2}, tasks, fresh=True)
    assert [r.task for r in forced] == tasks


def test_a_damaged_shard_is_redone(tmp_path):
    tasks = ["t0", "t1"]
    _run(tmp_path, {"a": 1}, tasks)
    (tmp_path / "out" / "t1.parquet").write_bytes(b"truncated")
    _, redone = _run(tmp_path, {"a": 1}, tasks)
    assert [r.task for r in redone] == ["t1"]


def test_input_fingerprint_follows_the_input_content(tmp_path):
    inp = tmp_path / "in"
    write_shard(frame(3), inp, "p.parquet")
    first = StageOutput("toy", {}, [inp], {"main": tmp_path / "o"})
    write_shard(frame(4), inp, "p.parquet")
    second = StageOutput("toy", {}, [inp], {"main": tmp_path / "o2"})
    assert first.fingerprint != second.fingerprint
