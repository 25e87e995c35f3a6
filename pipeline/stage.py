"""The one shape every stage has: a `Stage` class, and the one driver that runs it.

A stage is a class (see `Stage`): its options model, the outputs it declares, an input check,
an optional global `fit` over the input shards and a pure per-shard `transform`. `StageRun` is
the driver: it checks the inputs, opens the `StageOutput` (fingerprint, resume, --fresh), lists
the input shards as tasks, keeps those an earlier run finished, calls `fit` only when some shard
is still to do, maps the transform over the rest on the engine, writes the manifests and counts
rows in, out and dropped by reason into a `StageResult`. Stages with several global passes
(dedup, split) use the same pieces (`StageRun.map`, `.map_shards`, `.finish`) around their own
passes. The registry of stage types is `pipeline.stages`.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from pipeline.dataset import Dataset, ShardInfo, StageOutput, TaskRecord, sum_counts
from pipeline.engine import Engine
from pipeline.errors import InputError

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
    """One unit of work shipped to a worker (pickled: paths, the plan and a function reference)."""

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


def dataset_kinds(schema: dict[str, Any]) -> tuple[str, ...]:
    """The record kinds a dataset may hold, from its columns: a `kind` column means instruction
    and/or chat records (pipeline.records), none means text documents."""
    return ("instruction", "chat") if "kind" in schema else ("text",)


@dataclass
class ShardTask:
    """One input shard of a run: its task key (what resume looks up) and its output relpath."""

    key: str
    shard: Path
    relpath: str
    index: int  # position among every input shard of the run


class Stage:
    """A stage: options in, datasets out; the driver (`StageRun`) does resume, mapping, manifests.

    Class attributes: `name` (the job-file section and command), `folder` (default output folder
    in a job), `summary` (one line for `--help`), `Options` (a subclass of `stage.Options`),
    `secondary` (extra outputs, each at `<job out>/<kind>/<main folder name>`: ("rejected",)
    sends the frames a transform returns as "rejected" to rejected/<folder>/), `kinds` (record
    kinds accepted: "text", "instruction", "chat") and `keep` (files a person edits in the output
    that survive a re-run's clear). Built-in stages take `folder` and `summary` from their line
    in `pipeline.stages`. Methods, all optional but `transform`:

    - `check(schema, dataset)`: raise `InputError` if an input dataset cannot be used;
    - `fit(run) -> plan`: a global pass over `run.shards` with `run.engine`, only when some shard
      is still to do; returns what the workers need (it must pickle; default: the options);
    - `transform(frame, plan) -> ShardOutput`: pure, one shard (a LazyFrame) at a time;
    - `details(run, records) -> dict`: what the result and the main manifest report besides counts.

    A complete stage (tests call `transform` directly, without Dask)::

        class DropShort(Stage):
            name, folder, summary = "drop_short", "long", "drop documents under N characters"
            secondary = ("rejected",)

            class Options(stage.Options):
                min_chars: int = 100
                '''Documents with fewer characters are dropped (reason too_short).'''

            def check(self, schema, dataset):
                require_columns(self.name, dataset, schema, ["text"])

            def transform(self, frame, plan):
                df = frame.collect().with_columns(
                    pl.when(pl.col("text").str.len_chars() < plan.min_chars).then(pl.lit("too_short")).alias(REASON))
                return ShardOutput({"main": df.filter(pl.col(REASON).is_null()).drop(REASON),
                                    "rejected": df.filter(pl.col(REASON).is_not_null())})

    Run it with `DropShort(options).run(inputs, output, engine)`, or from a job file with
    `[[custom]] use = "mymodule:DropShort"`.
    """

    name: ClassVar[str] = ""
    folder: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    secondary: ClassVar[tuple[str, ...]] = ()
    kinds: ClassVar[tuple[str, ...]] = ("text",)
    keep: ClassVar[tuple[str, ...]] = ()
    map_group: ClassVar[int] = 0  # > 0: map this many shards per engine.map call (see `absorb`)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from pipeline.stages import STAGES

        spec = STAGES.get(cls.__dict__.get("name", ""))
        if spec is not None and spec.target.endswith(f":{cls.__qualname__}"):
            cls.folder = cls.__dict__.get("folder") or spec.folder
            cls.summary = cls.__dict__.get("summary") or spec.summary
        if not cls.folder:
            cls.folder = cls.name

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"

    # -- what a stage declares -------------------------------------------------------------
    def outputs(self, output: Path) -> dict[str, Path]:
        """Output folders by name: "main" is `output`; each secondary kind sits beside it."""
        return {"main": output, **{kind: output.parent / kind / output.name for kind in self.secondary}}

    def fingerprint(self, inputs: list[Path]) -> dict[str, Any]:
        """What, besides the inputs' content, decides the output (default: the options)."""
        return self.options.fingerprint_dict()

    def check(self, schema: dict[str, Any], dataset: Path) -> None:
        """Raise InputError if an input dataset (first shard's schema) cannot be used."""

    # -- the work --------------------------------------------------------------------------
    def fit(self, run: StageRun) -> Any:
        """A global pass over the input before the per-shard transform; returns the plan."""
        return self.options

    def plan_for_shard(self, plan: Any, task: ShardTask) -> Any:
        """The plan one shard's task gets (default: the same for all)."""
        return plan

    def transform(self, frame: pl.LazyFrame, plan: Any) -> ShardOutput:
        """One shard → output frames by name ("main", "rejected", ...) and counters."""
        raise NotImplementedError(f"{type(self).__name__}.transform")

    def absorb(self, records: list[TaskRecord]) -> None:
        """Called with finished task records group by group (resumed ones first), so a stage
        can fold large per-shard extras into small totals (and drop them) as they come."""

    def details(self, run: StageRun, records: list[TaskRecord]) -> dict[str, Any]:
        """What the result and the main manifest report besides the counts."""
        return {}

    def cleanup(self, run: StageRun) -> None:
        """Remove the run's temporary files, whether the run finished or failed."""

    def run(self, inputs: list[str | Path], output: str | Path, engine: Engine,
            fresh: bool = False) -> StageResult:
        """Run the stage over every input shard, resumably: the one-pass driver."""
        run = StageRun(self, inputs, output, engine, fresh=fresh)
        try:
            plan = self.fit(run) if run.todo else None
            records = run.map_shards(plan)
            details = self.details(run, records)
        finally:
            self.cleanup(run)
        return run.finish(records, details)


class StageRun:
    """The driver of one stage run: checked inputs, the StageOutput, the tasks still to do.

    Attributes a stage's `fit` and `details` use: `inputs`, `output` (main folder), `outputs`,
    `engine`, `shards` (every input shard, in order), `tasks`, `todo` (tasks still to run),
    `done` (records of those an earlier run finished), `store` (the StageOutput), `rows_in`.
    """

    def __init__(self, stage: Stage, inputs: list[str | Path], output: str | Path, engine: Engine,
                 fresh: bool = False):
        self.started = time.perf_counter()
        self.stage = stage
        self.engine = engine
        self.inputs = [Path(p) for p in inputs]
        self.output = Path(output)
        self.outputs = stage.outputs(self.output)
        pairs = input_shards(self.inputs)
        self._rows_in: int | None = None
        self._footers: dict[Path, Any] = {}
        self.resumed = 0  # tasks of map_pending passes an earlier run finished
        self.shards = [shard for _, shard in pairs]
        self.check_inputs(pairs)
        self.store = StageOutput(stage.name, {**stage.fingerprint(self.inputs), **code_fingerprint(stage)},
                                 self.inputs, self.outputs, fresh=fresh, keep=stage.keep)
        self.tasks = []
        for index, (root, shard) in enumerate(pairs):
            rel = shard_relpath(root, shard)
            # several inputs may share relative names; the prefix keeps output shards distinct
            relpath = rel if len(self.inputs) == 1 else f"in{index:05d}-{Path(rel).name}"
            self.tasks.append(ShardTask(f"{root}/{rel}", shard, relpath, index))
        todo_keys, self.done = self.store.pending(t.key for t in self.tasks)
        wanted = set(todo_keys)
        self.todo = [t for t in self.tasks if t.key in wanted]

    def check_inputs(self, pairs: list[tuple[Path, Path]]) -> None:
        """The stage's own check and its record kinds, on every distinct shard schema of each
        input (from the Parquet footers): a later shard that lacks a column fails here, named,
        not halfway through the run. An input's first shard speaks for the dataset in errors;
        a shard whose schema differs from it is named itself."""
        checked: set[tuple] = set()
        first_of: dict[Path, Path] = {}
        for root, shard in pairs:
            schema = dict(pl.read_parquet_schema(shard))
            key = (root, tuple((name, str(dtype)) for name, dtype in schema.items()))
            if key in checked:
                continue
            checked.add(key)
            where = root if first_of.setdefault(root, shard) == shard else shard
            kinds = dataset_kinds(schema)
            if not set(kinds) & set(self.stage.kinds):
                raise InputError(f"{self.stage.name}: input dataset {where} holds {' or '.join(kinds)} records "
                                 f"(columns {', '.join(schema)}); this stage takes {', '.join(self.stage.kinds)}")
            self.stage.check(schema, where)

    def footer(self, shard: Path) -> Any:
        """A shard's Parquet footer (`pyarrow.parquet.FileMetaData`: rows, row groups, their
        sizes), read once per run, whoever asks (the row count, a stage's planning)."""
        if shard not in self._footers:
            import pyarrow.parquet as pq

            self._footers[shard] = pq.ParquetFile(shard).metadata
        return self._footers[shard]

    @property
    def rows_in(self) -> int:
        if self._rows_in is None:
            self._rows_in = sum(self.footer(shard).num_rows for shard in self.shards)
        return self._rows_in

    def map(self, fn: Callable[[Any], Any], items: list, labels: list[str], desc: str | None = None) -> list:
        """fn over items on the engine's workers (a global pass of `fit`), results in order."""
        return self.engine.map(fn, items, labels=labels, desc=desc or self.stage.name)

    def map_pending(self, fn: Callable[[Any], TaskRecord], keys: list[str], items: list,
                    desc: str | None = None) -> list[TaskRecord]:
        """A pass of a multi-pass stage, resumably: `fn` (which commits a TaskRecord under its
        key) over the items whose key no earlier run finished; the records of all of them."""
        todo, done = self.store.pending(keys)
        self.resumed += len(done)
        wanted = set(todo)
        work = [item for key, item in zip(keys, items, strict=True) if key in wanted]
        return done + self.map(fn, work, [k for k in keys if k in wanted], desc)

    def map_tasks(self, plan: Any, tasks: list[ShardTask]) -> list[MapTask]:
        return [MapTask(t.key, t.shard, t.relpath, self.stage.transform, self.stage.plan_for_shard(plan, t),
                        self.store) for t in tasks]

    def map_shards(self, plan: Any, desc: str | None = None) -> list[TaskRecord]:
        """The transform over every shard still to do; the records of all shards, resumed first."""
        records = list(self.done)
        self.stage.absorb(records)
        size = self.stage.map_group or max(len(self.todo), 1)
        for start in range(0, len(self.todo), size):
            group = self.map_tasks(plan, self.todo[start:start + size])
            part = self.map(execute_map_task, group, [str(t.shard) for t in group], desc)
            self.stage.absorb(part)
            records += part
        return records

    def finish(self, records: list[TaskRecord], details: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None,
               extra_shards: dict[str, list[ShardInfo]] | None = None,
               rows_in: int | None = None, skipped: int | None = None) -> StageResult:
        """Write every output's manifest (its "extra": `extra`, default the details) and count
        the result (`rows_in`: default the input shards' rows; `skipped`: the resumed tasks)."""
        details = details or {}
        self.store.finalize(records, extra=details if extra is None else extra, extra_shards=extra_shards)
        return result_from_records(self.stage.name, records, self.rows_in if rows_in is None else rows_in,
                                   self.store, self.started,
                                   skipped=len(self.done) if skipped is None else skipped, details=details)


def source_sha256(obj: Any) -> str:
    """SHA-256 of a function's or class's source (its qualified name where the source cannot
    be read, e.g. code typed at a prompt)."""
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        source = f"{obj.__module__}.{obj.__qualname__}"
    return hashlib.sha256(source.encode()).hexdigest()


def code_fingerprint(stage: Stage) -> dict[str, str]:
    """For a user's Stage subclass (defined outside this package), the SHA-256 of its class
    source, so that editing the class makes the next run redo the stage instead of resuming
    outputs the old code wrote; built-in stages: nothing (their options say it all)."""
    cls = type(stage)
    if cls.__module__ == "pipeline" or cls.__module__.startswith("pipeline."):
        return {}
    return {"code_sha256": source_sha256(cls)}


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
