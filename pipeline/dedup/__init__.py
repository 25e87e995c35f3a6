"""Remove exact and near-duplicate documents (MinHash LSH), out-of-core, with an audit of each.

Reads documents (only `id` and `text` are needed) and writes the unique ones, each with a
`near_group` column (the id of its group of similar documents at the looser --group-threshold,
for leakage-free splits), and an audit dataset (default: `duplicates/` beside the output) with
one row per removed document: its columns plus `kept_id`, `kind` (exact|near), `similarity`
(true Jaccard to the kept document) and `reason`. Exact duplicates: same xxHash64 of the
normalised text. Near duplicates: word 5-gram shingles, MinHash signatures, LSH bands (derived
from --threshold and printed), candidates judged by their Jaccard (MinHash estimate, checked
exactly near the threshold with --verify),
connected components over the whole corpus, one document kept per component (--keep).

Example: pipeline dedup --input out/clean --output out/unique --threshold 0.8 --keep longest
"""

from __future__ import annotations

import importlib
import math
import shutil
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from pipeline.dataset import TaskRecord, sum_counts
from pipeline.dedup import minhash
from pipeline.dedup.graph import components, pick_per_component
from pipeline.dedup.passes import (
    ROW_BITS,
    Plan,
    lookup_shard,
    pass1_shard,
    pass2_partition,
    pass2b_verify,
    pass3_shard,
)
from pipeline.engine import Engine, _call_labelled
from pipeline.errors import require_columns
from pipeline.progress import Progress
from pipeline.records import KINDS
from pipeline.stage import Options as StageOptions
from pipeline.stage import Stage, StageResult, StageRun

WORK = "_work"
DETAILS_TASK = "details"  # the progress record holding the passes' counts


class Options(StageOptions):
    exact: bool = True
    """Remove exact duplicates (same xxHash64 of the NFKC, lower-cased, whitespace-collapsed text)."""
    near: bool = True
    """Remove near duplicates (MinHash LSH over word shingles)."""
    threshold: float = Field(0.8, gt=0.0, lt=1.0)
    """Jaccard similarity of shingle sets at or above which two documents are near duplicates."""
    ngram: int = Field(5, ge=1, le=8)
    """Words per shingle (texts with fewer words are one shingle)."""
    num_perm: int = Field(128, ge=8, le=1024)
    """MinHash permutations (signature length)."""
    bands: int | None = Field(None, ge=1)
    """LSH bands (default: derived from --threshold and --num-perm, printed at the start)."""
    rows: int | None = Field(None, ge=1)
    """Signature rows per LSH band (default: derived with --bands)."""
    seed: int = 42
    """Seed of the MinHash permutations."""
    verify: bool = True
    """Check LSH candidates by their true Jaccard (from shingle sets stored in pass 1) when their
    MinHash estimate is within --verify-margin of the threshold; off: the estimate decides."""
    verify_margin: float = Field(0.12, gt=0.0, le=1.0)
    """Estimates this close to the threshold are checked exactly (1 = check every candidate).
    0.12 is 2.7 standard deviations of the estimate at 128 permutations."""
    key: Literal["record", "prompt"] = "record"
    """What rows are compared by: the whole record (`text`; for instruction and chat records
    the rendering of every turn) or the prompt only (an instruction's system and prompt, a
    chat's non-assistant turns), so the same question with two answers is a duplicate.
    Documents are compared by their text either way."""
    keep: Literal["first", "longest", "best"] = "first"
    """Which document of a duplicate group stays: first in input order, longest (most words), or
    best (most distinct shingles); ties go to the first."""
    group_threshold: float = Field(0.5, ge=0.0, lt=1.0)
    """Jaccard for `near_group` (documents this similar share a group id); 0 = no grouping."""
    audit: str | None = None
    """Audit dataset folder of removed documents (default: `duplicates/` beside the output)."""
    partition_rows: int = Field(1_000_000, ge=1000)
    """Band rows per on-disk LSH partition: bounds the memory of one bucket task."""
    batch_docs: int = Field(2000, ge=1)
    """Documents shingled and signed at once per worker: bounds pass-1 memory."""
    batch_bytes: int = Field(4_000_000, ge=10_000)
    """Bytes of text shingled and signed at once per worker (a batch ends at whichever of
    `batch_docs` and `batch_bytes` comes first): bounds pass-1 memory when documents are long."""
    max_bucket: int = Field(50, ge=2)
    """LSH buckets with more documents link each to the bucket's first (a star) instead of
    every pair, so a huge bucket costs linear, not quadratic, work."""
    in_process_below: int = Field(256_000_000, ge=0)
    """Input bytes (uncompressed, from the Parquet footers) below which dedup runs its shard tasks on
    threads in this process (as many as the engine's workers) when no Dask cluster is running
    yet: starting one costs seconds, more than it saves on small inputs. Same output either
    way; 0 = always the engine."""

    def fingerprint_dict(self) -> dict:
        # where the tasks run changes no byte of the output: a resume may switch freely
        return {k: v for k, v in super().fingerprint_dict().items() if k != "in_process_below"}

    @model_validator(mode="after")
    def _bands_fit(self) -> Options:
        if self.bands and self.rows and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        if self.group_threshold >= self.threshold:
            raise ValueError(f"group_threshold ({self.group_threshold}) must be below threshold ({self.threshold})")
        return self


def bands_and_rows(options: Options) -> tuple[int, int]:
    """--bands/--rows as given, the missing one filled from num_perm, or both derived."""
    if options.bands and options.rows:
        return options.bands, options.rows
    if options.bands:
        return options.bands, max(1, options.num_perm // options.bands)
    if options.rows:
        return max(1, options.num_perm // options.rows), options.rows
    # every candidate's Jaccard is estimated from the full signatures (and checked exactly near
    # the threshold), so a false positive costs little: the bands favour recall
    return minhash.optimal_bands_rows(options.threshold, options.num_perm, 0.95)


def warm_imports() -> threading.Thread:
    """Import scipy's sparse matrices and graph algorithms (verification, components) on a
    background thread: about a tenth of a second of a small job's start-up that then overlaps
    pass 1, whose work runs in Polars, NumPy and rensa with the GIL released."""
    thread = threading.Thread(target=lambda: importlib.import_module("scipy.sparse.csgraph"),
                              name="dedup-imports", daemon=True)
    thread.start()
    return thread


def _say(message: str) -> None:
    print(f"dedup: {message}", file=sys.stderr)


def shard_bytes(shards: list[Path], footer: Callable[[Path], Any] | None = None) -> list[int]:
    """Uncompressed bytes of each shard (every column: the key text may be `text`, the prompt
    and response, or chat turns), from their Parquet footers: nothing is read. `footer` reads
    one (default: pyarrow; a run passes `StageRun.footer`, which it reads only once)."""
    footer = footer or (lambda shard: pq.ParquetFile(shard).metadata)
    sizes = []
    for shard in shards:
        meta = footer(shard)
        sizes.append(sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)))
    return sizes


def largest_first(sizes: list[int]) -> list[int]:
    """Task indices, largest first (ties in index order): started in that order, the long tasks
    do not end up alone at the end of a pass while the other workers idle (on the man pages
    one shard of 9 takes a quarter of pass 1)."""
    return sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))


class ThreadedTasks:
    """`Engine.map` on threads of this process, results in the order of items: for inputs too
    small to pay for starting a Dask cluster. The tasks spend their time in Polars, NumPy and
    rensa, which release the GIL, so the threads use every core; progress is reported and
    errors name their shard as the engine's are and do."""

    def __init__(self, engine: Engine):
        self.threads = max(1, engine.workers)
        self.progress = engine.progress
        self.progress_seconds = engine.progress_seconds

    def map(self, fn, items: list, labels: list[str] | None = None, desc: str = "shards") -> list:
        labels = list(labels) if labels is not None else [str(i) for i in range(len(items))]
        mode = None if self.progress is None else ("bar" if self.progress else "off")
        results: list = [None] * len(items)
        with (Progress(desc, total=len(items), unit="shard", mode=mode, interval=self.progress_seconds) as bar,
              ThreadPoolExecutor(self.threads, thread_name_prefix="dedup") as pool):
            futures = {pool.submit(_call_labelled, fn, item, label): i
                       for i, (item, label) in enumerate(zip(items, labels, strict=True))}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
            except BaseException:
                for future in futures:  # the first failure stops the rest, as on the engine
                    future.cancel()
                raise
        return results


def tasks_runner(engine: Engine, sizes: list[int], options: Options) -> Engine | ThreadedTasks:
    """Where dedup's tasks run: the engine, unless no cluster runs yet (a local engine not
    started) and the input (`sizes`: bytes of each shard) is below `in_process_below` bytes."""
    idle_local = engine.scheduler is None and engine.client is None and engine.workers > 0
    if idle_local and options.in_process_below and sum(sizes) < options.in_process_below:
        return ThreadedTasks(engine)
    return engine


def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    return Dedup(options).run(inputs, output, engine, fresh=fresh)


def _plan(run: StageRun, options: Options, details: dict) -> Plan:
    """The passes' plan: LSH shape, partitions sized for the input, where intermediates go."""
    bands, rows = bands_and_rows(options) if options.near else (0, 0)
    grouping = options.near and options.group_threshold > 0
    group_bands, group_rows = minhash.optimal_bands_rows(options.group_threshold, options.num_perm) if grouping else (0, 0)
    per_doc = bands + group_bands + (1 if options.exact else 0)
    # at least two partitions: two workers (or threads) share the bucket pass even when it is small
    partitions = max(2, math.ceil(run.rows_in * per_doc / options.partition_rows))
    if options.near:
        _say(f"threshold {options.threshold} → {bands} bands × {rows} rows of {options.num_perm} permutations "
             f"(50% collision at Jaccard {(1 / bands) ** (1 / rows):.2f}); near_group {options.group_threshold} → "
             f"{group_bands} × {group_rows}; {partitions} partitions; verify={'on' if options.verify else 'off'}")
    details.update({"bands": bands, "rows": rows, "group_bands": group_bands, "group_rows": group_rows,
                    "partitions": partitions, "num_perm": options.num_perm})
    return Plan(shards=[str(s) for s in run.shards], work=str(run.outputs["work"]), output=run.store,
                exact=options.exact, near=options.near, ngram=options.ngram, num_perm=options.num_perm,
                seed=options.seed, bands=bands, rows=rows, group_bands=group_bands, group_rows=group_rows,
                threshold=options.threshold, group_threshold=options.group_threshold, verify=options.verify,
                verify_margin=options.verify_margin, keep=options.keep, partitions=partitions,
                batch_docs=options.batch_docs, batch_bytes=options.batch_bytes, max_bucket=options.max_bucket,
                key=options.key)


def _run_passes(plan: Plan, run: StageRun, details: dict, sizes: list[int]) -> list:
    """Signatures, buckets and verification (each resumable on its own keys), the components on
    the driver, then the write pass over the shards still to do; their records."""
    n = len(plan.shards)
    records = []
    by_size = largest_first(sizes)
    if plan.exact or plan.near:
        records += run.map_pending(pass1_shard, [f"pass1:{i}" for i in by_size],
                                   [(plan, i) for i in by_size], "dedup signatures")
        records += run.map_pending(pass2_partition, [f"pass2:{p}" for p in range(plan.partitions)],
                                   [(plan, p) for p in range(plan.partitions)], "dedup buckets")
        edges = largest_first([sum(f.stat().st_size for f in (Path(plan.work) / "edges" / f"s={i:05d}").glob("*.parquet"))
                               for i in range(n)])
        records += run.map_pending(pass2b_verify, [f"verify:{i}" for i in edges],
                                   [(plan, i) for i in edges], "dedup verify")
    counts = sum_counts(records)
    details.update({k: v for k, v in counts.items() if k in ("candidate_edges", "verified_pairs", "edges_kept")})
    details["text_bytes"] = sum(int(r.extra.get("text_bytes", 0)) for r in records)

    assign = assignments(plan, run.engine, details)
    items = []
    rank = {shard: place for place, shard in enumerate(by_size)}
    for task in sorted(run.todo, key=lambda t: rank[t.index]):
        piece = assign.filter(pl.col("node") // (1 << ROW_BITS) == task.index)
        piece = piece.with_columns(row=pl.col("node") % (1 << ROW_BITS)).drop("node")
        items.append((plan, task.index, task.key, task.relpath, piece))
    return run.map(pass3_shard, items, [it[2] for it in items], "dedup write")


def assignments(plan: Plan, engine: Engine, details: dict) -> pl.DataFrame:
    """Driver: components over the verified edges → per node: removed?, kept node, kind, group.

    Memory O(edges): only documents with an edge are nodes. Returns node, removed, kept_id,
    kind, similarity, near_group (ids looked up on the workers).
    """
    files = sorted(str(f) for f in (Path(plan.work) / "verified").glob("*.parquet") if not f.name.startswith("."))
    empty = pl.DataFrame(schema={"node": pl.Int64, "removed": pl.Boolean, "kept_id": pl.String,
                                 "kind": pl.String, "similarity": pl.Float64, "near_group": pl.String})
    if not files:
        return empty
    edges = pl.read_parquet(files)
    attrs = pl.concat([
        edges.select(node="a", score="score_a", ekey="ekey_a"),
        edges.select(node="b", score="score_b", ekey="ekey_b"),
    ]).unique("node").sort("node")
    dup = edges.filter(pl.col("exact") | pl.col("dup"))
    nodes1, labels1 = components(dup["a"].to_numpy(), dup["b"].to_numpy())
    node_attrs = pl.DataFrame({"node": nodes1}).join(attrs, on="node", how="left", maintain_order="left")
    kept_of = pick_per_component(labels1, nodes1, node_attrs["score"].to_numpy())
    is_removed = kept_of != nodes1
    removed = nodes1[is_removed]
    kept = kept_of[is_removed]
    ekeys = attrs.select("node", "ekey")
    kinds = (pl.DataFrame({"node": removed, "kept": kept})
             .join(ekeys, on="node", how="left", maintain_order="left")
             .join(ekeys.rename({"node": "kept", "ekey": "kept_ekey"}), on="kept", how="left", maintain_order="left"))
    exact_kind = (kinds["ekey"] == kinds["kept_ekey"]).to_numpy() & plan.exact

    groups = edges.filter(pl.col("exact") | pl.col("dup") | pl.col("group"))
    nodes2, labels2 = components(groups["a"].to_numpy(), groups["b"].to_numpy())
    eligible = ~np.isin(nodes2, removed)
    rep = pick_per_component(labels2, nodes2, np.zeros(nodes2.size), eligible)
    details["duplicate_groups"] = int(np.unique(labels1).size)
    details["near_groups"] = int(np.unique(labels2).size)

    # ids of kept documents and group representatives; similarity of near removals
    wanted = np.unique(np.concatenate([kept, rep]))
    # similarity to the kept document: reuse an exactly checked edge, compute the rest
    near_pairs = pl.DataFrame({"node": removed[~exact_kind], "kept": kept[~exact_kind]})
    known = (near_pairs.with_columns(a=pl.min_horizontal("node", "kept"), b=pl.max_horizontal("node", "kept"))
             .join(edges.filter("checked").select("a", "b", "similarity"), on=["a", "b"], how="left")
             .select("node", "kept", "similarity"))
    unknown = known.filter(pl.col("similarity").is_null())
    near_removed = unknown["node"].to_numpy()
    near_kept = unknown["kept"].to_numpy()
    items = []
    for shard in np.unique(np.concatenate([wanted >> ROW_BITS, near_removed >> ROW_BITS])):
        mask_w = (wanted >> ROW_BITS) == shard
        mask_r = (near_removed >> ROW_BITS) == shard
        items.append((plan, int(shard), wanted[mask_w] & ((1 << ROW_BITS) - 1), near_removed[mask_r], near_kept[mask_r]))
    results = engine.map(lookup_shard, items, labels=[plan.shards[it[1]] for it in items], desc="dedup lookup")
    id_frames, sim_frames = [], []
    for item, res in zip(items, results, strict=True):
        shard = np.int64(item[1])
        id_frames.append(pl.DataFrame({"node": (shard << ROW_BITS) | res["rows"].astype(np.int64),
                                       "id": pl.Series(res["ids"], dtype=pl.String)}))
        sim_frames.append(pl.DataFrame({"node": item[3], "similarity": res["similarity"].astype(np.float64)},
                                       schema={"node": pl.Int64, "similarity": pl.Float64}))
    ids = pl.concat(id_frames) if id_frames else pl.DataFrame(schema={"node": pl.Int64, "id": pl.String})
    sims = pl.concat([known.filter(pl.col("similarity").is_not_null()).select("node", "similarity"), *sim_frames])

    removed_frame = (
        pl.DataFrame({"node": removed, "kept": kept, "exact": exact_kind})
        .join(ids.rename({"node": "kept", "id": "kept_id"}), on="kept", how="left")
        .join(sims, on="node", how="left")
        .select("node", removed=pl.lit(True), kept_id="kept_id",
                kind=pl.when("exact").then(pl.lit("exact")).otherwise(pl.lit("near")),
                similarity=pl.when("exact").then(1.0).otherwise(pl.col("similarity")),
                near_group=pl.lit(None, pl.String))
    )
    kept_frame = (
        pl.DataFrame({"node": nodes2[eligible], "rep": rep[eligible]})
        .join(ids.rename({"node": "rep", "id": "near_group"}), on="rep", how="left")
        .select("node", removed=pl.lit(False), kept_id=pl.lit(None, pl.String), kind=pl.lit(None, pl.String),
                similarity=pl.lit(None, pl.Float64), near_group="near_group")
    )
    return pl.concat([removed_frame, kept_frame]).sort("node")


class Dedup(Stage):
    """See the module docstring."""

    name = "dedup"
    Options = Options
    kinds = KINDS

    def outputs(self, output: Path) -> dict[str, Path]:
        """The kept rows, the duplicates' audit (default: duplicates/ beside the output) and the
        passes' intermediates (OUTPUT/_work, removed at the end)."""
        audit = Path(self.options.audit) if self.options.audit else output.parent / "duplicates"
        return {"main": output, "duplicates": audit, "work": output / WORK}

    def check(self, schema: dict, dataset: Path) -> None:
        require_columns(self.name, dataset, schema, ["id", "text"])

    def run(self, inputs: list[str | Path], output: str | Path, engine: Engine, fresh: bool = False) -> StageResult:
        """Three passes over the shards through the driver's pieces; the write pass is the
        per-shard task that resume looks up; small inputs run on threads (tasks_runner)."""
        warm_imports()
        run = StageRun(self, inputs, output, engine, fresh=fresh)
        sizes = shard_bytes(run.shards, run.footer)  # where tasks run, and their order
        run.engine = tasks_runner(engine, sizes, self.options)
        details: dict = {}
        plan = _plan(run, self.options, details)
        if run.todo:
            records = run.done + _run_passes(plan, run, details, sizes)
            # what the passes counted (candidate edges, groups, ...) outlives _work: a resume with
            # nothing left to do writes the same manifest details, not the bare band numbers
            run.store.commit(TaskRecord(task=DETAILS_TASK, fingerprint="", outputs={}, counts={}, extra=details))
        else:
            records = run.done
            saved = run.store.completed(DETAILS_TASK)
            details.update(saved.extra if saved else {})
        del run.store.outputs["work"]
        shutil.rmtree(run.outputs["work"], ignore_errors=True)
        return run.finish(records, details)
