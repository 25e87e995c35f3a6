"""Split a dataset into train, val and test shard sets: exact stratified, group, time or random.

Reads a dataset (e.g. labelled/) and writes SPLITS/train/, SPLITS/val/, SPLITS/test/ (Parquet
shards of --shard-rows rows, optionally JSONL beside them, each row with a `split` column),
SPLITS/manifest.json (counts per split and class, options, seed, input fingerprint, SHA-256 of
every file) and the dataset manifest SPLITS/_manifest.json. Stratified splits meet every class's
quota to within one row; --group keeps every group on one side; --time-col puts train before
val before test; --balance re-balances train only. Same input and seed: byte-identical shards.
Design and every option: docs/stages/split.md.

\b
Example:
  pipeline split --input out/labelled --output out/splits --ratios 0.8,0.1,0.1 \\
      --stratify label --group near_group --balance undersample --jsonl
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import field_validator, model_validator

from pipeline.dataset import (
    MANIFEST,
    ShardInfo,
    StageOutput,
    TaskRecord,
    write_json_atomic,
    write_shard,
)
from pipeline.engine import Engine
from pipeline.errors import EmptyResultError, InputError, JobError, missing_column
from pipeline.records import KINDS
from pipeline.split import export, passes, quotas
from pipeline.split.export import EXPORT_MANIFEST, verify  # noqa: F401 - public helpers
from pipeline.stage import Options as StageOptions
from pipeline.stage import Stage, StageResult, StageRun

GROUP_BUCKET_ROWS = 1_000_000  # rows per group-shuffle bucket: bounds a bucket worker's memory


def _parse_pairs(text: str, key: str) -> dict[str, float]:
    pairs = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip():
            raise ValueError(f"{key}: expected CLASS=SHARE,... (e.g. fresh=0.5,rotten=0.5), got {item!r}")
        pairs[name.strip()] = float(value)
    return pairs


class Options(StageOptions):
    ratios: str = "0.8,0.1,0.1"
    """Shares of train, val and test, comma-separated (a job file may also give a list); they
    must sum to 1. A 0 share leaves that split empty (it still gets one empty shard)."""
    stratify: str | None = None
    """Column whose classes keep their share in every split: each class's rows in each split are
    within one row of its exact quota. A null value is its own class, named `__null__`."""
    group: str | None = None
    """Column whose groups never straddle splits (e.g. `near_group` from dedup, or a host); a null
    group is the row alone. With --stratify, a group counts toward its majority class and the
    deviation from the exact quotas is reported in manifest.json."""
    time_col: str | None = None
    """Date/datetime, number or ISO-string column: train is earliest, then val, then test (ties
    broken by the seeded hash, nulls count as earliest). Cannot be combined with --stratify."""
    id_col: str = "id"
    """Column that identifies a row: the seeded order hashes it, so a row's split does not
    depend on how the input is sharded."""
    seed: int = 42
    """Seed of the order inside each class; the same input and seed give byte-identical shards."""
    balance: Literal["none", "undersample", "oversample", "target"] = "none"
    """Re-balance train only (val and test keep the true distribution): undersample every class
    to the smallest, oversample to the largest (copies get `oversampled = true`), or `target`
    (--target shares and/or --max-per-class). Needs --stratify (the classes)."""
    target: str | None = None
    """With --balance target: the class shares of train, e.g. "fresh=0.4,rotten=0.4,plot=0.2"
    (a job file may give a table); every class in train must be named (0 drops it)."""
    max_per_class: int | None = None
    """With --balance target: at most this many train rows per class (applied after --target)."""
    shard_rows: int = 100_000
    """Rows per output shard (the last shard of a split holds the rest)."""
    jsonl: bool = False
    """Also write every shard as JSON Lines (part-00000.jsonl beside part-00000.parquet)."""
    encrypt_key_file: Path | None = None
    """Encrypt every copy of the rows the split writes (the shards, the undersampled rows in
    rejected/, the temporary pieces) with Parquet modular encryption (AES-GCM) under the master
    keys in this JSON file {"footer": base64, "columns": base64}; it must be chmod 600. Checked
    when the job loads. File permissions follow the job's policy (`[job] private`, docs/trust.md)."""
    keep_split: str | None = None
    """Keep the split the source came with instead of assigning one: the column holding it (or
    `meta.KEY`, a key of the JSON `meta` column). Its values map to train/val/test by
    --split-map; rows with any other value go to rejected/ with the value as the reason.
    Cannot be combined with stratify, group, time_col or balance; ratios are not used."""
    split_map: str = "train=train,training=train,val=val,valid=val,validation=val,dev=val,test=test,testing=test"
    """With --keep-split: VALUE=SPLIT pairs, comma-separated (a job file may give a table), e.g.
    "train=train,heldout=test"; SPLIT is train, val or test."""
    empty_split: Literal["warn", "fail"] = "warn"
    """A split left with 0 rows although its ratio is above 0 (or, with --keep-split, a value
    maps to it): warn on stderr and in the manifest, or fail the stage."""

    @field_validator("ratios", mode="before")
    @classmethod
    def _ratios_text(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        return value

    @field_validator("ratios")
    @classmethod
    def _ratios_valid(cls, value: str) -> str:
        try:
            shares = [float(x) for x in value.split(",")]
        except ValueError:
            raise ValueError(f"ratios: expected three numbers like 0.8,0.1,0.1, got {value!r}") from None
        if len(shares) != 3 or any(s < 0 or not math.isfinite(s) for s in shares):
            raise ValueError(f"ratios: expected three shares >= 0 (train,val,test), got {value!r}")
        if abs(sum(shares) - 1) > 1e-6:
            raise ValueError(f"ratios: shares must sum to 1, got {sum(shares):g} from {value!r}")
        return value

    @field_validator("target", "split_map", mode="before")
    @classmethod
    def _pairs_text(cls, value: Any) -> Any:
        """A TOML table ({fresh = 0.5, ...}) is accepted as its `key=value,...` text."""
        if isinstance(value, dict):
            return ",".join(f"{k}={v}" for k, v in value.items())
        return value

    @field_validator("target")
    @classmethod
    def _target_valid(cls, value: str | None) -> str | None:
        if value is not None:
            shares = _parse_pairs(value, "target")
            if not shares or any(s < 0 for s in shares.values()) or sum(shares.values()) <= 0:
                raise ValueError(f"target: need shares >= 0 with a positive sum, got {value!r}")
        return value

    @field_validator("split_map")
    @classmethod
    def _split_map_valid(cls, value: str) -> str:
        for item in value.split(","):
            name, sep, target = item.rpartition("=")
            if item.strip() and (not sep or not name.strip() or target.strip() not in quotas.SPLITS):
                raise ValueError(f"split_map: expected VALUE=train|val|test pairs, got {item!r}")
        return value

    @field_validator("encrypt_key_file")
    @classmethod
    def _key_file_valid(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:  # before any work: a bad key file found at split time wastes every stage before
                export.load_keys(value)
            except (OSError, ValueError) as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("shard_rows")
    @classmethod
    def _shard_rows_valid(cls, value: int) -> int:
        if value < 1:
            raise ValueError("shard_rows: must be at least 1")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> Options:
        if self.time_col and self.stratify:
            raise ValueError("time_col and stratify cannot be combined: a time split orders all rows "
                             "by time, stratification would reorder them per class")
        if self.balance != "none" and not self.stratify:
            raise ValueError(f"balance={self.balance!r} needs stratify: the column whose classes are balanced")
        if self.balance == "target" and self.target is None and self.max_per_class is None:
            raise ValueError("balance='target' needs target (class shares) or max_per_class")
        if self.balance != "target" and (self.target is not None or self.max_per_class is not None):
            raise ValueError("target and max_per_class apply only with balance='target'")
        if self.max_per_class is not None and self.max_per_class < 0:
            raise ValueError("max_per_class: must be >= 0")
        if self.keep_split is not None:
            clashing = [k for k in ("stratify", "group", "time_col") if getattr(self, k) is not None]
            clashing += ["balance"] if self.balance != "none" else []
            if clashing:
                raise ValueError(f"keep_split cannot be combined with {', '.join(clashing)}: the source's "
                                 "own split is kept as it is")
        if self.jsonl and self.encrypt_key_file is not None:
            raise ValueError("jsonl cannot be combined with encrypt_key_file (JSON Lines would be plaintext)")
        return self

    def ratio_values(self) -> list[float]:
        return [float(x) for x in self.ratios.split(",")]

    def target_shares(self) -> dict[str, float] | None:
        return _parse_pairs(self.target, "target") if self.target else None

    def given_split(self) -> passes.GivenSplit | None:
        if self.keep_split is None:
            return None
        pairs = [item.rpartition("=") for item in self.split_map.split(",") if item.strip()]
        return passes.GivenSplit(self.keep_split, tuple((k.strip(), v.strip()) for k, _, v in pairs))


# -- driver helpers --------------------------------------------------------------------------
def _merge_histograms(frames: list[pl.DataFrame]) -> pl.DataFrame:
    schema = {"_stratum": pl.String, "_sub": pl.Int64, "_size": pl.Int64}
    merged = pl.DataFrame(schema=schema)
    # merge in batches so the driver holds at most strata x sub-ranges rows plus one batch
    for start in range(0, len(frames), 64):
        batch = [f.cast(schema) for f in frames[start:start + 64] if f.height]
        merged = (pl.concat([merged, *batch]).group_by("_stratum", "_sub")
                  .agg(pl.col("_size").sum()).sort("_stratum", "_sub"))
    return merged


def _refine(engine: Engine, sources: list[passes.UnitSource], hist: pl.DataFrame,
            positions: dict[str, list[int]]) -> dict[str, list[quotas.Threshold]]:
    """Exact thresholds for the positions of every stratum (one pass over the unit sources)."""
    by_stratum = hist.partition_by("_stratum", as_dict=True)
    hists = {s: by_stratum[(s,)] for s in positions}
    wanted = [(s, sub) for s, ps in positions.items() for sub in quotas.subranges_for(hists[s], ps)]
    wanted_frame = pl.DataFrame(wanted, schema={"_stratum": pl.String, "_sub": pl.Int64}, orient="row")
    candidates = pl.DataFrame(schema={"_stratum": pl.String, "_sub": pl.Int64, "_t": pl.Int64,
                                      "_h": pl.UInt64, "_unit": pl.String, "_size": pl.Int64})
    if wanted:
        parts = engine.map(passes.boundary_units, [passes.RefineTask(s, wanted_frame) for s in sources],
                           labels=[str(s.path) for s in sources], desc="split:boundaries")
        parts = [p for p in parts if p.height]
        if parts:
            candidates = pl.concat(parts)
    found = candidates.partition_by("_stratum", as_dict=True)
    empty = candidates.clear()
    return {s: quotas.thresholds_from_candidates(hists[s], found.get((s,), empty), ps)
            for s, ps in positions.items()}


def _group_balance(engine: Engine, shards: list[Path], spec: passes.KeySpec, work: Path,
                   desired: dict[str, int], labels: list[str]) -> pl.DataFrame:
    """Group mode: exact re-balancing thresholds over train rows in their own seeded order."""
    sources = [passes.UnitSource("train_rows", p, i, spec, work) for i, p in enumerate(shards)]
    hist = _merge_histograms(engine.map(passes.histogram, sources, labels=labels, desc="split:balance"))
    have = dict(hist.group_by("_stratum").agg(pl.col("_size").sum()).iter_rows())
    cuts = {c: quotas.copies_for(n, desired.get(c, n)) for c, n in sorted(have.items())}
    found = _refine(engine, sources, hist, {c: [cut[0]] for c, cut in cuts.items()})
    rows = [[c, found[c][0].t, found[c][0].h, found[c][0].unit, *[None] * 6, cut[1], cut[2]]
            for c, cut in cuts.items()]
    return _threshold_frame(rows, pl.Int64)


def _threshold_frame(rows: list[dict[str, Any]], t_dtype: pl.DataType) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {"_stratum": pl.String}
    for k in range(3):
        schema.update({f"th{k}_t": t_dtype, f"th{k}_h": pl.UInt64, f"th{k}_u": pl.String})
    schema.update({"copies0": pl.Int64, "copies1": pl.Int64})
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _counts_table(rows: list[tuple], with_oversampled: bool = False) -> dict[str, Any]:
    """{split: {"rows": n, "classes": {class: n}, ["oversampled": n]}} from (split, class, [ov], n)."""
    table: dict[str, Any] = {s: {"rows": 0, "classes": {}} for s in quotas.SPLITS}
    for row in rows:
        split, cls, n = row[0], row[1], row[-1]
        entry = table[split]
        entry["rows"] += n
        entry["classes"][cls] = entry["classes"].get(cls, 0) + n
        if with_oversampled:
            entry.setdefault("oversampled", 0)
            if row[2]:
                entry["oversampled"] += n
    for entry in table.values():
        entry["classes"] = dict(sorted(entry["classes"].items()))
        if with_oversampled:
            entry.setdefault("oversampled", 0)
    return table


def _quota_report(assigned: dict[str, Any], ratios: list[float]) -> tuple[dict[str, Any], float]:
    """Per class and split: exact quota, actual rows before balancing, deviation."""
    classes = sorted({c for entry in assigned.values() for c in entry["classes"]})
    report, worst = {}, 0.0
    for cls in classes:
        actual = {s: assigned[s]["classes"].get(cls, 0) for s in quotas.SPLITS}
        total = sum(actual.values())
        report[cls] = {}
        for split, share in zip(quotas.SPLITS, ratios, strict=True):
            exact = total * share
            deviation = actual[split] - exact
            worst = max(worst, abs(deviation))
            report[cls][split] = {"exact": round(exact, 6), "actual": actual[split],
                                  "deviation": round(deviation, 6)}
    return report, round(worst, 6)


def _finished(output: StageOutput) -> dict[str, Any] | None:
    """The stored export manifest when a run with this fingerprint completed and is intact."""
    root = output.outputs["main"]
    main = root / MANIFEST
    if not main.exists() or not (root / EXPORT_MANIFEST).exists():
        return None
    manifest = json.loads(main.read_text())
    if manifest.get("fingerprint") != output.fingerprint:
        return None
    exported = json.loads((root / EXPORT_MANIFEST).read_text())
    for shard in exported["files"]:
        path = root / shard["path"]
        if not path.exists() or path.stat().st_size != shard["bytes"]:
            return None
    return exported


def _assign_and_write(engine: Engine, options: Options, shards: list[Path], spec: passes.KeySpec,
                      work: Path, rejected: Path, labels: list[str], shard_tasks: list[passes.ShardTask],
                      rows_in: int) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
    """Steps 1-5: quotas and thresholds in the seeded order, then every input shard into pieces.

    Returns what each write task wrote, train rows per class before and after re-balancing."""
    # 1. time bins (time splits only): per-shard quantiles merged on the driver
    if options.time_col:
        summaries = engine.map(passes.time_summary, shard_tasks, labels=labels, desc="split:time")
        spec = replace(spec, time_edges=passes.time_edges(summaries))

    # 2. units and their histogram: rows themselves, or groups gathered by a hash shuffle
    if options.group:
        spec = replace(spec, buckets=max(1, min(4096, math.ceil(rows_in / GROUP_BUCKET_ROWS))))
        shard_tasks = [replace(t, spec=spec) for t in shard_tasks]
        engine.map(passes.shuffle_groups, shard_tasks, labels=labels, desc="split:groups")
        buckets = [passes.BucketTask(b, spec, work) for b in range(spec.buckets)]
        hists = engine.map(passes.aggregate_bucket, buckets, labels=[f"bucket {b}" for b in range(spec.buckets)],
                           desc="split:group-sizes")
        sources = [passes.UnitSource("bucket", work / "units" / f"b={b:05d}.parquet", b, spec)
                   for b in range(spec.buckets) if (work / "units" / f"b={b:05d}.parquet").exists()]
    else:
        sources = [passes.UnitSource("rows", p, i, spec) for i, p in enumerate(shards)]
        hists = engine.map(passes.histogram, sources, labels=labels, desc="split:counts")
    hist = _merge_histograms(hists)

    # 3. exact quotas per stratum → thresholds in the seeded order
    ratios = options.ratio_values()
    singles = dict(hist.group_by("_stratum").agg(pl.col("_size").sum()).iter_rows())
    greedy = bool(options.group) and not options.time_col
    placed: dict[str, list[int]] = {}
    if greedy:
        # groups of several rows: placed greedily on the driver; singletons then fill the quotas
        multi_files = sorted((work / "multi").glob("*.parquet"))
        multi = pl.read_parquet([str(f) for f in multi_files]) if multi_files else pl.DataFrame(
            schema={"_unit": pl.String, "_h": pl.UInt64, "_size": pl.Int64, "_stratum": pl.String, "_n": pl.Int64})
        totals = dict(singles)
        for cls, n in multi.group_by("_stratum").agg(pl.col("_n").sum()).iter_rows():
            totals[cls] = totals.get(cls, 0) + n
        assigned_groups, placed = passes.greedy_groups(multi, totals, ratios)
        placed_frame = assigned_groups.join(multi.select("_unit", "_h").unique("_unit"), on="_unit").with_columns(
            _bucket=passes.bucket_of(spec.buckets))
        for (bucket,), part in placed_frame.partition_by("_bucket", as_dict=True).items():
            write_shard(part.select("_unit", "split").sort("_unit"), work, f"greedy/b={bucket:05d}.parquet")
        split_positions = {}
        for cls, m in sorted(singles.items()):
            need = [f - p for f, p in zip(quotas.apportion(totals[cls], ratios), placed.get(cls, [0, 0, 0]), strict=True)]
            if min(need) < 0:
                clamped = [max(0, x) for x in need]
                need = quotas.apportion(m, clamped if sum(clamped) else ratios)
            split_positions[cls] = [need[0], need[0] + need[1]]
    else:
        split_positions = {s: [q[0], q[0] + q[1]] for s, n in sorted(singles.items())
                           for q in [quotas.apportion(n, ratios)]}
    split_th = _refine(engine, sources, hist, split_positions)
    train_rows = {s: th[0].start for s, th in split_th.items()}
    for cls, counts in placed.items():
        train_rows[cls] = train_rows.get(cls, 0) + counts[0]

    # 4. re-balance train only: in row mode one more exact cut (and copies) inside train's part
    # of each stratum; in group mode after the assignment, by each train row's own class
    desired = quotas.balance_plan(train_rows, options.balance, options.target_shares(), options.max_per_class)
    if options.balance == "target" and options.target_shares() is not None:
        missing = sorted(s for s, n in train_rows.items() if n and s not in options.target_shares())
        if missing:
            raise JobError(f"split: key `target`: names no share for class(es) {missing}; "
                              "add them (0 drops a class)")
    if greedy:
        cuts = {s: (0, 1, 0) for s in split_th}
        balance_positions: dict[str, list[int]] = {}
    else:
        cuts = {s: quotas.copies_for(train_rows[s], desired[s]) for s in train_rows}
        balance_positions = {s: [c[0]] for s, c in cuts.items() if c[0] != train_rows[s]}
    balance_th = _refine(engine, sources, hist, balance_positions) if balance_positions else {}
    t_dtype = pl.Float64 if options.time_col and any(
        isinstance(th.t, float) for ths in split_th.values() for th in ths) else pl.Int64
    rows = []
    for s, (th1, th2) in split_th.items():
        thb = balance_th[s][0] if s in balance_th else th1
        row: list[Any] = [s]
        for th in (thb, th1, th2):
            row += [th.t, th.h, th.unit]
        rows.append(row + [cuts[s][1], cuts[s][2]])
    thresholds = _threshold_frame(rows, t_dtype)

    # 5. assignment and pieces: every input shard's rows into per-split pieces
    if options.group:
        engine.map(passes.assign_bucket, [passes.AssignBucketTask(b, work, thresholds) for b in range(spec.buckets)],
                   labels=[f"bucket {b}" for b in range(spec.buckets)], desc="split:assign")
    balance = None
    if greedy and options.balance != "none":
        balance = _group_balance(engine, shards, spec, work, desired, labels)
    write_tasks = [passes.WriteTask(p, i, spec, work, None if options.group else thresholds, rejected, balance,
                                    key_file=options.encrypt_key_file) for i, p in enumerate(shards)]
    written = engine.map(passes.write_pieces, write_tasks, labels=labels, desc="split:write")
    return written, train_rows, desired


# -- the stage -------------------------------------------------------------------------------
def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    """Split, re-balance train, export shards and manifests. See docs/stages/split.md for the design."""
    return Split(options).run(inputs, output, engine, fresh=fresh)


def _run(run: StageRun, options: Options) -> StageResult:
    engine, output, out = run.engine, run.output, run.store
    rejected = run.outputs["rejected"]
    previous = _finished(out)
    if previous is not None:
        return StageResult(stage=run.stage.name, rows_in=previous["rows_in"], rows_out=previous["rows_out"],
                           dropped=previous["dropped"], seconds=round(time.perf_counter() - run.started, 3),
                           outputs={k: str(v) for k, v in out.outputs.items()},
                           skipped_tasks=sum(f["format"] == "parquet" for f in previous["files"]),
                           details=previous["summary"])

    shards, rows_in, inputs = run.shards, run.rows_in, run.inputs
    work = output / "_work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    first_schema = pl.scan_parquet(str(shards[0])).collect_schema()
    class_col = options.stratify
    if class_col is None:
        class_col = "label" if "label" in first_schema else None
    spec = passes.KeySpec(seed=options.seed, id_col=options.id_col, group_col=options.group,
                          stratify_col=options.stratify, class_col=class_col, time_col=options.time_col)
    shard_tasks = [passes.ShardTask(p, i, spec, work) for i, p in enumerate(shards)]
    labels = [str(p) for p in shards]

    ratios = options.ratio_values()
    given = options.given_split()
    if given is not None:  # the source's own split: no quotas, every row keeps its split
        try:
            given.expr(first_schema)
        except ValueError as error:
            raise InputError(f"split: {error} (in {shards[0]})") from None
        write_tasks = [passes.WriteTask(p, i, spec, work, None, rejected, key_file=options.encrypt_key_file,
                                        given=given) for i, p in enumerate(shards)]
        written = engine.map(passes.write_pieces, write_tasks, labels=labels, desc="split:write")
        train_rows: dict[str, int] = {}
        desired: dict[str, int] = {}
    else:
        written, train_rows, desired = _assign_and_write(engine, options, shards, spec, work, rejected,
                                                         labels, shard_tasks, rows_in)

    # 6. export: shards of exactly shard_rows rows per split
    pack_tasks = []
    for split in quotas.SPLITS:
        piece_rows = [(str(work / "pieces" / split / f"s={i:06d}.parquet"), w["pieces"][split])
                      for i, w in enumerate(written)]
        for j, slices in enumerate(export.pack_plan(piece_rows, options.shard_rows)):
            pack_tasks.append(export.PackTask(split, f"{split}/part-{j:05d}.parquet", slices, out,
                                              options.jsonl, options.encrypt_key_file))
    records = run.map_pending(export.pack_shard, [t.relpath for t in pack_tasks], pack_tasks, "split:export")
    rejected_shards = [ShardInfo(**w["rejected"]) for w in written if w["rejected"]]
    rejected_records = [TaskRecord(task="rejected", fingerprint=out.fingerprint,
                                   outputs={"rejected": rejected_shards})] if rejected_shards else []

    # 7. manifests
    assigned = _counts_table([r for w in written for r in w["assigned"]])
    final = _counts_table([r for w in written for r in w["final"]], with_oversampled=True)
    quota_report, worst = _quota_report(assigned, ratios) if given is None else ({}, 0.0)
    dropped: dict[str, int] = {}
    for w in written:
        for reason, n in w["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
    rows_out = sum(e["rows"] for e in final.values())
    files = []
    for record in sorted(records, key=lambda r: r.task):
        shard = record.outputs["main"][0]
        split = shard.path.split("/")[0]
        files.append({"split": split, "format": "parquet", "path": shard.path, "rows": shard.rows,
                      "bytes": shard.bytes, "sha256": shard.sha256,
                      "encrypted": options.encrypt_key_file is not None})
        if "jsonl" in record.extra:
            j = record.extra["jsonl"]
            files.append({"split": split, "format": "jsonl", "path": j["path"], "rows": j["rows"],
                          "bytes": j["bytes"], "sha256": j["sha256"], "encrypted": False})
    # a split with rows expected and none got: with --keep-split val may be empty (many sources
    # ship only train and test), otherwise every split whose share is above 0
    expected = ["train", "test"] if given is not None else [s for s, r in zip(quotas.SPLITS, ratios, strict=True) if r > 0]
    empty = [s for s in expected if final[s]["rows"] == 0]
    if empty:
        message = (f"split: {', '.join(empty)} got 0 rows of {rows_in} (ratios {options.ratios}"
                   f"{', keep_split ' + options.keep_split if given is not None else ''})")
        if options.empty_split == "fail":
            raise EmptyResultError(message + "; set empty_split = \"warn\" to accept it")
        print(f"warning: {message}", file=sys.stderr)
    summary = {
        "mode": ("given" if given is not None else "time" if options.time_col else "group" if options.group else
                 "stratified" if options.stratify else "random"),
        "empty_splits": empty,
        "encrypted": options.encrypt_key_file is not None,
        "rows": {s: final[s]["rows"] for s in quotas.SPLITS},
        "oversampled": sum(e["oversampled"] for e in final.values()),
        "max_quota_deviation": worst,
    }
    exported = {
        "format": "pipeline-splits/1",
        "options": options.fingerprint_dict(),
        "seed": options.seed,
        "inputs": [str(p) for p in inputs],
        "input_fingerprint": out.input_fingerprint,
        "fingerprint": out.fingerprint,
        "class_column": class_col,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped": dict(sorted(dropped.items())),
        "counts": final,
        "assigned": assigned,
        "quotas": quota_report,
        "balance": {"mode": options.balance, "train_before": train_rows, "train_target": desired},
        "summary": summary,
        "files": files,
    }
    write_json_atomic(output / EXPORT_MANIFEST, exported)
    shutil.rmtree(work)
    result = run.finish(records + rejected_records, summary, extra={"export_manifest": EXPORT_MANIFEST, **summary},
                        skipped=run.resumed)
    return result.model_copy(update={"rows_out": rows_out, "dropped": exported["dropped"]})


class Split(Stage):
    """See the module docstring."""

    name = "split"
    Options = Options
    kinds = KINDS

    secondary = ("rejected",)

    def check(self, schema: dict, dataset: Path) -> None:
        """Every column an option names is in the input."""
        for key in ("id_col", "stratify", "group", "time_col"):
            column = getattr(self.options, key)
            if column is not None and column not in schema:
                raise missing_column(self.name, column, dataset, schema, hint=f"check split.{key}")

    def run(self, inputs: list[str | Path], output: str | Path, engine: Engine, fresh: bool = False) -> StageResult:
        """The passes (assign, re-balance, write pieces, export) through the driver's pieces."""
        run = StageRun(self, inputs, output, engine, fresh=fresh)
        try:
            return _run(run, self.options)
        except BaseException:
            # the pieces are copies of the rows and a re-run starts them over: never leave them behind
            shutil.rmtree(run.output / "_work", ignore_errors=True)
            raise
