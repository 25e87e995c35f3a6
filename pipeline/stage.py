"""The shape every stage shares: an options model, a per-shard transform, and a `run`.

`run_map_stage` wires a per-shard transform (input shard → named output frames) to the engine
and the dataset layer: it lists input shards, skips tasks already complete for the same
fingerprint, runs the rest on the workers, writes manifests and counts rows in, out and
dropped by reason. Stages with global steps (dedup, cluster, split) use the same pieces
(`StageOutput`, `Engine.map`, `StageResult`) around their own passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from pipeline.dataset import Dataset, StageOutput, TaskRecord, sum_counts
from pipeline.engine import Engine

REASON = "reason"  # the column of a rejected dataset that says why a row was dropped


class Options(BaseModel):
    """Base of every stage's options: unknown keys are errors, defaults are documented."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    def fingerprint_dict(self) -> dict[str, Any]:
        """Options that change output (all by default); stages drop e.g. progress flags."""
        return self.model_dump(mode="json")


class StageResult(BaseModel):
    """What a stage run counted. `dropped` maps a reason to rows dropped for it."""

    stage: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = {}
    seconds: float = 0.0
    outputs: dict[str, str] = {}
    skipped_tasks: int = 0
    details: dict[str, Any] = {}

    def summary_line(self) -> str:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items(), key=lambda kv: -kv[1]))
        resumed = f", {self.skipped_tasks} shards resumed" if self.skipped_tasks else ""
        text = f"{self.stage:<9} in={self.rows_in:<8} out={self.rows_out:<8} {self.seconds:7.1f}s{resumed}"
        return text + (f"  dropped: {dropped}" if dropped else "")


@dataclass
class ShardOutput:
    """What a per-shard transform returns: frames by output name, plus counters."""

    frames: dict[str, pl.DataFrame]
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MapTask:
    """One unit of work shipped to a worker (pickled: paths, options and a function reference)."""

    key: str
    shard: Path
    relpath: str
    transform: Callable[[pl.LazyFrame, Any], ShardOutput]
    options: Any
    output: StageOutput


def shard_relpath(dataset_root: Path, shard: Path) -> str:
    return str(shard.relative_to(dataset_root))


def execute_map_task(task: MapTask) -> TaskRecord:
    """Worker side: read one shard lazily, transform, write every output frame, commit."""
    frame = pl.scan_parquet(str(task.shard), hive_partitioning=False)
    result = task.transform(frame, task.options)
    written = {}
    for name, out in result.frames.items():
        if out.height == 0 and name != "main":
            continue
        written[name] = [task.output.write(name, out, task.relpath)]
    counts = dict(result.counts)
    counts.setdefault("rows_out", result.frames["main"].height)
    rejected = result.frames.get("rejected")
    if rejected is not None and rejected.height and REASON in rejected.columns:
        for reason, n in rejected.group_by(REASON).len().iter_rows():
            counts[f"dropped:{reason}"] = counts.get(f"dropped:{reason}", 0) + n
    record = TaskRecord(task=task.key, fingerprint="", outputs=written, counts=counts, extra=result.extra)
    return task.output.commit(record)


def input_shards(inputs: list[str | Path]) -> list[tuple[Path, Path]]:
    """(dataset root, shard) for every shard of every input, in a stable order."""
    pairs = []
    for root in inputs:
        dataset = Dataset(root)
        pairs.extend((dataset.root, shard) for shard in dataset.require_shards())
    return pairs


def count_rows(shards: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(s).metadata.num_rows for s in shards)


def result_from_records(
    stage: str,
    records: list[TaskRecord],
    rows_in: int,
    output: StageOutput,
    started: float,
    skipped: int,
    details: dict[str, Any] | None = None,
) -> StageResult:
    counts = sum_counts(records)
    dropped = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("dropped:")}
    return StageResult(
        stage=stage,
        rows_in=rows_in,
        rows_out=counts.get("rows_out", 0),
        dropped=dropped,
        seconds=round(time.perf_counter() - started, 3),
        outputs={k: str(v) for k, v in output.outputs.items()},
        skipped_tasks=skipped,
        details={**{k: v for k, v in counts.items() if not k.startswith("dropped:") and k != "rows_out"}, **(details or {})},
    )


def map_tasks(
    inputs: list[str | Path],
    transform: Callable[[pl.LazyFrame, Any], ShardOutput],
    options: Any,
    output: StageOutput,
) -> tuple[list[Path], list[MapTask]]:
    """Every input shard in order, and one MapTask per shard writing under the same relative path.

    Stages with a global fit (features, cluster, label) create their StageOutput, fit into it,
    then map with these tasks; `run_map_stage` is the same without the fit.
    """
    pairs = input_shards(inputs)
    tasks = []
    for index, (root, shard) in enumerate(pairs):
        rel = shard_relpath(root, shard)
        # several inputs may share relative names; the prefix keeps output shards distinct
        relpath = rel if len(inputs) == 1 else f"in{index:05d}-{Path(rel).name}"
        tasks.append(MapTask(key=f"{root}/{rel}", shard=shard, relpath=relpath,
                             transform=transform, options=options, output=output))
    return [shard for _, shard in pairs], tasks


def pending_tasks(output: StageOutput, tasks: list[MapTask]) -> tuple[list[MapTask], list[TaskRecord]]:
    """Tasks still to run, and the records of those an earlier run finished."""
    todo_keys, done = output.pending(t.key for t in tasks)
    keys = set(todo_keys)
    return [t for t in tasks if t.key in keys], done


def run_map_stage(
    stage: str,
    transform: Callable[[pl.LazyFrame, Any], ShardOutput],
    options: Options,
    inputs: list[str | Path],
    outputs: dict[str, str | Path],
    engine: Engine,
    fresh: bool = False,
) -> StageResult:
    """Run a per-shard transform over every input shard, resumably. See the module docstring."""
    started = time.perf_counter()
    output = StageOutput(stage, options.fingerprint_dict(), inputs, outputs, fresh=fresh)
    shards, tasks = map_tasks(inputs, transform, options, output)
    todo, done = pending_tasks(output, tasks)
    records = engine.map(execute_map_task, todo, labels=[str(t.shard) for t in todo], desc=stage)
    records = done + records
    output.finalize(records)
    return result_from_records(stage, records, count_rows(shards), output, started, skipped=len(done))


def batch_starts(lengths: np.ndarray, max_docs: int, max_bytes: int) -> np.ndarray:
    """Row offsets where the batches of a shard start (stages that cut a shard to bound memory): a batch holds at most `max_docs` rows and the
    text bytes before its last row stay under `max_bytes` (so at most `max_bytes` plus one
    document). Vectorised: a row's batch key is (bytes before it // max_bytes, row // max_docs),
    both non-decreasing, and a batch starts where the key changes."""
    n = len(lengths)
    if n == 0:
        return np.zeros(1, np.int64)
    before = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]])
    key = (before // max_bytes) * (n // max_docs + 1) + np.arange(n) // max_docs
    return np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
