"""Datasets on disk: a folder of Parquet shards, a `_manifest.json`, atomic writes and resume.

A dataset is a directory of Parquet shards (optionally Hive-partitioned, `key=value/` folders)
that any tool can read with ``polars.scan_parquet("DIR/**/*.parquet", hive_partitioning=True)``.
A stage run writes each shard to a hidden temporary name and renames it, so a crash never
leaves a half shard that looks whole, then records the shard's completion in
``_progress/<task>.json`` together with the run's fingerprint (stage, options, inputs). A re-run
with the same fingerprint skips every task whose record and files still check out; a different
fingerprint (or ``fresh=True``) clears the dataset first. When every task is done the run writes
``_manifest.json``: schema, shards with rows and checksums, the stage, its options and inputs,
and last an empty ``_SUCCESS`` marker: a folder without it is incomplete (a stage failed or is
still running) and readers must not take its shards for the whole dataset (docs/trust.md).
Temporary files a kill or a full disk left behind (``.NAME.tmp-*``) are swept when a run starts.

This module knows no stage.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import tomllib
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DatasetError, JobError

MANIFEST = "_manifest.json"
PROGRESS = "_progress"
SUCCESS = "_SUCCESS"  # written last: the dataset is whole (the Hadoop/Spark convention)
SHARD_GLOB = "**/*.parquet"
TEMP_GLOB = ".*.tmp-*"  # every temporary name this module writes before its rename




class OutputWriteError(DatasetError):
    """Writing an output failed (a full disk, a read-only folder); the message names the output."""


def write_failure(target: Path, error: BaseException) -> OutputWriteError:
    """The error to raise when writing ``target`` failed: it names the output, not the input."""
    text = str(error)
    hint = ""
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text:
        hint = "; the output's file system is full: free space there or choose another --output"
    return OutputWriteError(f"cannot write output {target}: {text}{hint}")


def sweep_temp_files(root: Path) -> int:
    """Delete the temporary files a killed or failed run left under ``root``; return how many.

    Only call it while holding the output's lock (pipeline.lock): a running writer's
    temporary file looks the same.
    """
    removed = 0
    if not Path(root).is_dir():
        return 0
    for path in sorted(Path(root).rglob(TEMP_GLOB), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_toml(path: Path, label: str, what: str = "file") -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a JobError that starts with label."""
    if not path.is_file():
        raise JobError(f"{label}: {what} not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise JobError(f"{label}: not valid TOML: {error}") from None


def stable_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the text that fingerprints hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint_of(value: Any) -> str:
    return hashlib.sha256(stable_json(value).encode()).hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file whole or not at all (a hidden temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as error:
        raise write_failure(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, value: Any) -> None:
    write_bytes_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


@dataclass(frozen=True)
class ShardInfo:
    """One finished shard: its path relative to the dataset root, rows, bytes and SHA-256."""

    path: str
    rows: int
    bytes: int
    sha256: str


def write_shard(frame: pl.DataFrame | pa.Table, root: Path, relpath: str) -> ShardInfo:
    """Write one Parquet shard atomically (temporary name, then rename) and describe it.

    Statistics are on and compression is zstd; the file is byte-identical for identical input.
    """
    target = root / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        if isinstance(frame, pl.DataFrame):
            frame.write_parquet(tmp, compression="zstd", statistics=True)
            rows = frame.height
        else:
            pq.write_table(frame, tmp, compression="zstd")
            rows = frame.num_rows
        info = ShardInfo(relpath, rows, tmp.stat().st_size, file_sha256(tmp))
        os.replace(tmp, target)
    except (OSError, pl.exceptions.PolarsError, pa.ArrowException) as error:
        # Polars and Arrow report a full disk as their own errors; a caller that blames its
        # input for a PolarsError must not see this one as such
        raise write_failure(target, error) from None
    finally:
        tmp.unlink(missing_ok=True)
    return info


class Dataset:
    """Read side of a dataset folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r})"

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def exists(self) -> bool:
        return self.root.is_dir()

    def complete(self) -> bool:
        """True when the stage that writes this folder finished it (``_SUCCESS`` is there)."""
        return (self.root / SUCCESS).is_file()

    def manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        return json.loads(self.manifest_path.read_text())

    def shard_paths(self) -> list[Path]:
        """Shards in a stable order: the manifest's list when there is one, else a sorted glob."""
        if not self.root.is_dir():
            raise DatasetError(f"input dataset {self.root} does not exist")
        manifest = self.manifest()
        if manifest is not None:
            return [self.root / s["path"] for s in manifest["shards"]]
        if (self.root / PROGRESS).is_dir():
            raise DatasetError(f"input dataset {self.root} is incomplete: the stage writing it did not "
                               f"finish (no {MANIFEST}, no {SUCCESS}); re-run that stage to complete it")
        return sorted(p for p in self.root.glob(SHARD_GLOB) if not p.name.startswith("."))

    def require_shards(self) -> list[Path]:
        shards = self.shard_paths()
        if not shards:
            raise DatasetError(f"input dataset {self.root} holds no Parquet shards")
        return shards

    def scan(self, columns: list[str] | None = None) -> pl.LazyFrame:
        """All shards as one lazy frame (Hive partition columns included)."""
        shards = self.require_shards()
        frame = pl.scan_parquet(
            [str(p) for p in shards],
            hive_partitioning=True,
            missing_columns="insert",
            extra_columns="ignore",
        )
        return frame.select(columns) if columns else frame

    def rows(self) -> int:
        manifest = self.manifest()
        if manifest is not None:
            return int(manifest["rows"])
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.shard_paths())

    def fingerprint(self) -> str:
        """What a consumer's fingerprint depends on: the manifest's content hash, or file stats."""
        manifest = self.manifest()
        if manifest is not None:
            return manifest["content_sha256"]
        stats = [
            (str(p.relative_to(self.root)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in self.shard_paths()
        ]
        return fingerprint_of(stats)


def input_fingerprint(paths: Iterable[str | Path]) -> str:
    """Fingerprint of any inputs: dataset folders (by manifest) or plain files (by size, mtime)."""
    parts = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            parts.append((str(path), Dataset(path).fingerprint()))
        elif path.exists():
            stat = path.stat()
            parts.append((str(path), stat.st_size, stat.st_mtime_ns))
        else:
            parts.append((str(path), None))
    return fingerprint_of(parts)


@dataclass
class TaskRecord:
    """What one finished task wrote, keyed by output dataset name, and what it counted."""

    task: str
    fingerprint: str
    outputs: dict[str, list[ShardInfo]]
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "fingerprint": self.fingerprint,
            "outputs": {k: [asdict(s) for s in v] for k, v in self.outputs.items()},
            "counts": self.counts,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskRecord:
        return cls(
            task=data["task"],
            fingerprint=data["fingerprint"],
            outputs={k: [ShardInfo(**s) for s in v] for k, v in data["outputs"].items()},
            counts=data.get("counts", {}),
            extra=data.get("extra", {}),
        )


def task_filename(task: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task)
    return f"{safe[:80]}-{hashlib.sha1(task.encode()).hexdigest()[:10]}.json"


class StageOutput:
    """The write side of one stage run: one or more output datasets sharing a fingerprint.

    ``outputs`` maps a name ("main", "rejected", ...) to a folder. Task records live in the
    main output's ``_progress/``. Workers call :meth:`write` and :meth:`commit` (the object
    pickles: it holds only paths and strings), the driver calls :meth:`pending` before and
    :meth:`finalize` after.
    """

    def __init__(
        self,
        stage: str,
        options: dict[str, Any],
        inputs: list[str | Path],
        outputs: dict[str, str | Path],
        fresh: bool = False,
        keep: tuple[str, ...] = (),
    ):
        """``keep``: glob patterns, relative to the main output, of files a person may have
        edited there (cluster's labels.toml) that survive when a stale output is cleared."""
        if "main" not in outputs:
            raise ValueError("outputs needs a 'main' entry")
        self.stage = stage
        self.options = options
        self.inputs = [str(p) for p in inputs]
        self.outputs = {k: Path(v) for k, v in outputs.items()}
        self.input_fingerprint = input_fingerprint(self.inputs)
        self.fingerprint = fingerprint_of(
            {"stage": stage, "options": options, "inputs": self.input_fingerprint}
        )
        self._prepare(fresh, keep)

    @property
    def progress_dir(self) -> Path:
        return self.outputs["main"] / PROGRESS

    def _prepare(self, fresh: bool, keep: tuple[str, ...] = ()) -> None:
        stale = fresh
        for root in self.outputs.values():
            manifest = Dataset(root).manifest()
            if manifest is not None and manifest.get("fingerprint") != self.fingerprint:
                stale = True
        if self.progress_dir.is_dir():
            for record_path in self.progress_dir.glob("*.json"):
                data = json.loads(record_path.read_text())
                if data.get("fingerprint") != self.fingerprint:
                    stale = True
                    break
        if stale:
            main = self.outputs["main"]
            aside = main.parent / f".{main.name}.kept-{os.getpid()}"
            kept = [p.relative_to(main) for pattern in keep for p in main.glob(pattern) if p.is_file()]
            for rel in kept:  # moved next to the output, not deleted, should the clear fail
                (aside / rel).parent.mkdir(parents=True, exist_ok=True)
                (main / rel).replace(aside / rel)
            for root in self.outputs.values():
                clear_folder(root)
            for rel in kept:
                (main / rel).parent.mkdir(parents=True, exist_ok=True)
                (aside / rel).replace(main / rel)
            if kept:
                shutil.rmtree(aside)
        for root in self.outputs.values():
            root.mkdir(parents=True, exist_ok=True)
            sweep_temp_files(root)
        self.progress_dir.mkdir(parents=True, exist_ok=True)

    # -- worker side ---------------------------------------------------------------------
    def write(self, name: str, frame: pl.DataFrame | pa.Table, relpath: str) -> ShardInfo:
        return write_shard(frame, self.outputs[name], relpath)

    def commit(self, record: TaskRecord) -> TaskRecord:
        record.fingerprint = self.fingerprint
        write_json_atomic(self.progress_dir / task_filename(record.task), record.to_json())
        return record

    # -- driver side ---------------------------------------------------------------------
    def completed(self, task: str) -> TaskRecord | None:
        """The task's record if it finished under this fingerprint and its shards are intact."""
        path = self.progress_dir / task_filename(task)
        if not path.exists():
            return None
        record = TaskRecord.from_json(json.loads(path.read_text()))
        if record.fingerprint != self.fingerprint:
            return None
        for name, shards in record.outputs.items():
            for shard in shards:
                file = self.outputs[name] / shard.path
                if not file.exists() or file.stat().st_size != shard.bytes:
                    return None
        return record

    def pending(self, tasks: Iterable[str]) -> tuple[list[str], list[TaskRecord]]:
        """Split task keys into those still to run and the records of those already done."""
        todo, done = [], []
        for task in tasks:
            record = self.completed(task)
            (done if record else todo).append(record or task)
        if todo:  # work to redo: the folders are not whole until finalize says so again
            for root in self.outputs.values():
                (root / SUCCESS).unlink(missing_ok=True)
        return todo, done

    def finalize(
        self,
        records: list[TaskRecord],
        extra: dict[str, Any] | None = None,
        extra_shards: dict[str, list[ShardInfo]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Write every output's manifest from the task records; return the manifests."""
        records = sorted(records, key=lambda r: r.task)
        manifests = {}
        for name, root in self.outputs.items():
            shards = [s for r in records for s in r.outputs.get(name, [])]
            shards += (extra_shards or {}).get(name, [])
            shards.sort(key=lambda s: s.path)
            schema = None
            if shards:
                schema_obj = pq.read_schema(root / shards[0].path)
                schema = [
                    {"name": f.name, "type": str(f.type), "nullable": f.nullable}
                    for f in schema_obj
                ]
            manifest = {
                "stage": self.stage,
                "dataset": name,
                "options": self.options,
                "inputs": self.inputs,
                "input_fingerprint": self.input_fingerprint,
                "fingerprint": self.fingerprint,
                "content_sha256": fingerprint_of([(s.path, s.sha256) for s in shards]),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "rows": sum(s.rows for s in shards),
                "bytes": sum(s.bytes for s in shards),
                "schema": schema,
                "shards": [asdict(s) for s in shards],
                "extra": extra or {},
            }
            write_json_atomic(root / MANIFEST, manifest)
            manifests[name] = manifest
        for root in self.outputs.values():  # last: every output of the run is whole
            write_bytes_atomic(root / SUCCESS, b"")
        return manifests


def clear_folder(root: Path) -> None:
    """Empty a stale output folder, keeping its lock file (pipeline.lock holds it open)."""
    from pipeline.lock import LOCK_NAME

    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def sum_counts(records: Iterable[TaskRecord]) -> dict[str, int]:
    total: dict[str, int] = {}
    for record in records:
        for key, value in record.counts.items():
            total[key] = total.get(key, 0) + int(value)
    return total
