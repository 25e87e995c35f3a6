"""The per-shard passes of the split, run on workers: keys, histograms, shuffles, assignment.

Every function here takes one small picklable task and touches one input shard or one bucket;
only histograms (strata x 4,096 sub-ranges), boundary units and counts return to the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.dataset import write_shard
from pipeline.errors import InputError
from pipeline.hashing import xxhash64

NULL_CLASS = "__null__"  # the class name of a null label (stratify treats null as a class)
ALL = "__all__"  # the one stratum of an unstratified split
HASH_SUB_BITS = 12  # sub-ranges per stratum in hash order: 4,096
TIME_HASH_BITS = 8  # time order: each time bin is cut again into 256 hash sub-ranges
SEGMENT_SPLIT = ["train", "train", "val", "test"]


@dataclass(frozen=True)
class KeySpec:
    """How rows become units with an order: the columns to read and the seed."""

    seed: int
    id_col: str = "id"
    group_col: str | None = None
    stratify_col: str | None = None
    class_col: str | None = None  # counted per split in the manifest (stratify col, else label)
    time_col: str | None = None
    time_edges: tuple[Any, ...] = ()  # bin edges of the time key (time splits only)
    buckets: int = 1  # hash buckets of the group shuffle


def time_key(column: str, dtype: pl.DataType) -> pl.Expr:
    """The time column as a sortable number; nulls first (they land in train)."""
    expr = pl.col(column)
    if dtype == pl.String:
        expr = expr.str.to_datetime(time_zone="UTC")
        dtype = pl.Datetime("us", "UTC")
    if dtype.is_temporal():
        expr = expr.to_physical().cast(pl.Int64)
        return expr.fill_null(np.iinfo(np.int64).min)
    if dtype.is_integer():
        return expr.cast(pl.Int64).fill_null(np.iinfo(np.int64).min)
    if dtype.is_float():
        return expr.cast(pl.Float64).fill_null(float("-inf")).fill_nan(float("-inf"))
    raise InputError(f"time column {column!r} has type {dtype}; need a date/datetime, number or ISO string")


def class_expr(column: str | None) -> pl.Expr:
    if column is None:
        return pl.lit(ALL, pl.String)
    return pl.col(column).cast(pl.String).fill_null(NULL_CLASS)


def row_keys(frame: pl.LazyFrame, spec: KeySpec, shard_index: int) -> pl.LazyFrame:
    """Add _row, _unit, _h, _t, _class (reported class) and _stratum (row level) to input rows.

    A row's unit is its group (`group_col`, a null group is the row alone) or its id. `_h` is
    xxHash64 of "seed:unit", so the order inside a stratum is a seeded shuffle that depends on
    the ids only, not on how the input is sharded.
    """
    schema = frame.collect_schema()
    for col in (spec.id_col, spec.group_col, spec.stratify_col, spec.time_col):
        if col is not None and col not in schema:
            raise InputError(f"column {col!r} is not in the input (columns: {', '.join(schema.names())})")
    frame = frame.with_row_index("_row")
    own = pl.concat_str(pl.lit("i:"), pl.col(spec.id_col).cast(pl.String)).fill_null(
        pl.concat_str(pl.lit(f"r:{shard_index}:"), pl.col("_row").cast(pl.String)))
    if spec.group_col:
        unit = pl.concat_str(pl.lit("g:"), pl.col(spec.group_col).cast(pl.String)).fill_null(own)
    else:
        unit = own
    frame = frame.with_columns(_unit=unit)
    return frame.with_columns(
        _h=xxhash64(pl.concat_str(pl.lit(f"{spec.seed}:"), pl.col("_unit"))),
        _t=time_key(spec.time_col, schema[spec.time_col]) if spec.time_col else pl.lit(0, pl.Int64),
        _class=class_expr(spec.class_col),
        _stratum=class_expr(spec.stratify_col),
    )


def with_sub(frame: pl.DataFrame, spec: KeySpec) -> pl.DataFrame:
    """The sub-range of each unit: top hash bits, or (time bin, top hash bits)."""
    if not spec.time_col:
        shift = pl.lit(1 << (64 - HASH_SUB_BITS), pl.UInt64)
        return frame.with_columns(_sub=(pl.col("_h") // shift).cast(pl.Int64))
    # bins in time order: (edge k-1, edge k) is bin 2k, the edge value itself is bin 2k+1; only
    # an edge bin holds a single time, so only it may be cut further by hash (heavy ties)
    edges = np.asarray(spec.time_edges)
    t = frame["_t"].to_numpy()
    k = np.searchsorted(edges, t, side="left").astype(np.int64)
    exact = np.zeros(len(t), dtype=bool)
    inside = k < len(edges)
    exact[inside] = edges[k[inside]] == t[inside]
    top = (frame["_h"] // (1 << (64 - TIME_HASH_BITS))).cast(pl.Int64).to_numpy()
    sub = (2 * k + exact) * (1 << TIME_HASH_BITS) + np.where(exact, top, 0)
    return frame.with_columns(_sub=pl.Series(sub, dtype=pl.Int64))


def input_rows(path: Path) -> pl.LazyFrame:
    return pl.scan_parquet(str(path), hive_partitioning=False)


# -- time: per-shard quantiles → bin edges ---------------------------------------------------
@dataclass(frozen=True)
class ShardTask:
    path: Path
    index: int
    spec: KeySpec
    work: Path


def time_summary(task: ShardTask) -> tuple[int, list[Any]]:
    """(rows, 257 quantiles of the time key) of one shard: the driver merges them into bins."""
    try:
        keys = row_keys(input_rows(task.path), task.spec, task.index).select("_t").collect()
    except pl.exceptions.ComputeError as error:
        raise InputError(f"time column {task.spec.time_col!r} could not be read as times: {error}") from None
    if keys.height == 0:
        return 0, []
    qs = np.quantile(keys["_t"].to_numpy(), np.linspace(0, 1, 257), method="nearest")
    return keys.height, qs.tolist()


def time_edges(summaries: list[tuple[int, list[Any]]], bins: int = 1024) -> tuple[Any, ...]:
    """Approximate global quantiles (weights: shard rows) as sorted, distinct bin edges.

    Edges only balance the histogram; any edges give exact splits.
    """
    values, weights = [], []
    for rows, qs in summaries:
        if rows:
            values.extend(qs)
            weights.extend([rows / len(qs)] * len(qs))
    if not values:
        return ()
    order = np.argsort(values, kind="stable")
    v = np.asarray(values)[order]
    w = np.cumsum(np.asarray(weights)[order])
    picks = np.searchsorted(w, np.linspace(0, w[-1], bins + 1)[1:-1])
    edges = np.unique(v[np.clip(picks, 0, len(v) - 1)])
    return tuple(edges.tolist())


# -- units: where the histograms and boundary candidates come from ---------------------------
@dataclass(frozen=True)
class UnitSource:
    """Units of one input shard (row mode) or of one group bucket (group mode)."""

    kind: str  # "rows", "bucket" or "train_rows" (group mode balance: train rows by row order)
    path: Path
    index: int
    spec: KeySpec
    work: Path | None = None


UNIT_COLUMNS = ["_stratum", "_sub", "_t", "_h", "_unit", "_size"]


def row_order(seed: int, id_col: str, shard: int) -> dict[str, pl.Expr]:
    """A row's own place in a seeded order (group mode balance), as _bt, _bh, _bu columns."""
    row_key = pl.concat_str(pl.lit("i:"), pl.col(id_col).cast(pl.String)).fill_null(
        pl.concat_str(pl.lit(f"r:{shard}:"), pl.col("_row").cast(pl.String)))
    return {"_bt": pl.lit(0, pl.Int64), "_bh": xxhash64(pl.concat_str(pl.lit(f"{seed}:b:"), row_key)),
            "_bu": row_key}


def assigned_rows(keys: pl.LazyFrame, work: Path, shard: int) -> pl.LazyFrame:
    """Group mode: rows with the `split` and `_copies` of their group (from the assign files)."""
    files = sorted((work / "assign" / f"s={shard:06d}").glob("*.parquet"))
    if files:
        table = pl.scan_parquet([str(f) for f in files])
    else:
        table = pl.LazyFrame(schema={"_unit": pl.String, "split": pl.String, "_copies": pl.Int64})
    return keys.join(table, on="_unit", how="left", maintain_order="left")


def load_units(source: UnitSource) -> pl.DataFrame:
    if source.kind == "bucket":
        return pl.read_parquet(source.path, columns=UNIT_COLUMNS)
    keys = row_keys(input_rows(source.path), source.spec, source.index)
    if source.kind == "train_rows":
        order = row_order(source.spec.seed, source.spec.id_col, source.index)
        frame = (assigned_rows(keys, source.work, source.index).filter(pl.col("split") == "train")
                 .select("_stratum", _t=order["_bt"], _h=order["_bh"], _unit=order["_bu"],
                         _size=pl.lit(1, pl.Int64)).collect())
    else:
        frame = keys.select("_stratum", "_t", "_h", "_unit", _size=pl.lit(1, pl.Int64)).collect()
    return with_sub(frame, source.spec).select(UNIT_COLUMNS)


def histogram(source: UnitSource) -> pl.DataFrame:
    """Rows per (stratum, sub-range) of one source."""
    units = load_units(source)
    return units.group_by("_stratum", "_sub").agg(pl.col("_size").sum()).sort("_stratum", "_sub")


@dataclass(frozen=True)
class RefineTask:
    source: UnitSource
    wanted: pl.DataFrame  # columns _stratum, _sub


def boundary_units(task: RefineTask) -> pl.DataFrame:
    """Every unit of the wanted (stratum, sub-range) pairs of one source."""
    units = load_units(task.source)
    return units.join(task.wanted, on=["_stratum", "_sub"], how="semi")


# -- group mode: shuffle unit keys by hash bucket, aggregate groups --------------------------
def bucket_of(buckets: int) -> pl.Expr:
    """Hash range → bucket (monotone in _h, so buckets are ranges of the hash order)."""
    top = pl.col("_h") // pl.lit(1 << 48, pl.UInt64)
    return (top * buckets // (1 << 16)).cast(pl.Int64)


def shuffle_groups(task: ShardTask) -> int:
    """Group mode, per input shard: (unit, class, rows, min time) into one file per bucket."""
    keys = row_keys(input_rows(task.path), task.spec, task.index)
    parts = (
        keys.group_by("_unit", "_stratum")
        .agg(_n=pl.len().cast(pl.Int64), _t=pl.col("_t").min(), _h=pl.col("_h").first())
        .with_columns(_shard=pl.lit(task.index, pl.Int64), _bucket=bucket_of(task.spec.buckets))
        .sort("_bucket", "_unit", "_stratum")
        .collect()
    )
    for (bucket,), part in parts.partition_by("_bucket", as_dict=True, maintain_order=True).items():
        write_shard(part.drop("_bucket"), task.work,
                    f"shuffle/b={bucket:05d}/s={task.index:06d}.parquet")
    return int(parts["_n"].sum()) if parts.height else 0


@dataclass(frozen=True)
class BucketTask:
    bucket: int
    spec: KeySpec
    work: Path


def aggregate_bucket(task: BucketTask) -> pl.DataFrame:
    """Group mode, per bucket: one row per group (size, min time, majority class as stratum).

    Writes units/b=B.parquet (the units the threshold machinery places), members/b=B.parquet
    (group, input shard) and returns the histogram of the units file. For a time split every
    group is a unit (ordered by its earliest row). Otherwise only groups of one row are; the
    groups of several rows go, with their class counts, to multi/b=B.parquet for the driver's
    greedy assignment (`greedy_groups`). Ties in the majority go to the class that sorts first.
    """
    files = sorted((task.work / "shuffle" / f"b={task.bucket:05d}").glob("*.parquet"))
    if not files:
        return pl.DataFrame(schema={"_stratum": pl.String, "_sub": pl.Int64, "_size": pl.Int64})
    parts = pl.scan_parquet([str(f) for f in files])
    per_class = parts.group_by("_unit", "_stratum").agg(pl.col("_n").sum())
    stratum = (
        per_class.sort(["_unit", "_n", "_stratum"], descending=[False, True, False])
        .group_by("_unit", maintain_order=True).agg(pl.col("_stratum").first())
    )
    units = (
        parts.group_by("_unit")
        .agg(_t=pl.col("_t").min(), _h=pl.col("_h").first(), _size=pl.col("_n").sum())
        .join(stratum, on="_unit")
        .sort("_unit")
        .collect()
    )
    if not task.spec.time_col:
        multi = units.filter(pl.col("_size") > 1).select("_unit", "_h", "_size")
        long = (per_class.collect().join(multi, on="_unit")
                .select("_unit", "_h", "_size", "_stratum", "_n").sort("_unit", "_stratum"))
        write_shard(long, task.work, f"multi/b={task.bucket:05d}.parquet")
        units = units.filter(pl.col("_size") == 1)
    units = with_sub(units, task.spec).select(UNIT_COLUMNS)
    members = parts.select("_unit", "_shard").unique().sort("_shard", "_unit").collect()
    write_shard(units, task.work, f"units/b={task.bucket:05d}.parquet")
    write_shard(members, task.work, f"members/b={task.bucket:05d}.parquet")
    return units.group_by("_stratum", "_sub").agg(pl.col("_size").sum())


def greedy_groups(
    multi: pl.DataFrame, totals: dict[str, int], ratios: list[float]
) -> tuple[pl.DataFrame, dict[str, list[int]]]:
    """Assign groups of several rows to splits, largest first, keeping every class near its share.

    `multi` is the long table (_unit, _h, _size, _stratum = class, _n) of those groups, `totals`
    the rows per class of the whole input. Each group goes to the split where adding it lowers
    the squared deviation from the per-class targets (ratio x class rows, each class weighted by
    1 / its rows) the most. Returns (_unit, split) and the rows per class and split it placed.
    The driver holds this table: groups of several rows x classes counts (singletons, usually
    most rows, never enter it); one Python step per such group.
    """
    classes = sorted(totals)
    placed = {c: [0, 0, 0] for c in classes}
    if multi.height == 0:
        return pl.DataFrame(schema={"_unit": pl.String, "split": pl.String}), placed
    groups = (multi.group_by("_unit").agg(pl.col("_size").first(), pl.col("_h").first())
              .sort(["_size", "_h", "_unit"], descending=[True, False, False]).with_row_index("_g"))
    index = {c: i for i, c in enumerate(classes)}
    cells = multi.join(groups.select("_unit", "_g"), on="_unit")
    matrix = np.zeros((groups.height, len(classes)), dtype=np.float64)
    np.add.at(matrix, (cells["_g"].to_numpy(), cells["_stratum"].replace_strict(index).to_numpy()),
              cells["_n"].to_numpy())
    n = np.array([totals[c] for c in classes], dtype=np.float64)
    target = np.outer(np.asarray(ratios), n)
    weight = 1.0 / np.maximum(n, 1.0)
    active = np.array([i for i, r in enumerate(ratios) if r > 0])
    have = np.zeros((3, len(classes)))
    choice = np.empty(groups.height, dtype=np.int64)
    for g in range(groups.height):
        v = matrix[g]
        gain = ((2.0 * (have[active] - target[active]) + v) * v * weight).sum(axis=1)
        best = int(active[int(np.argmin(gain))])
        have[best] += v
        choice[g] = best
    names = np.array(["train", "val", "test"])
    assigned = groups.select("_unit", split=pl.Series(names[choice]))
    for c, i in index.items():
        placed[c] = [int(x) for x in have[:, i]]
    return assigned, placed


# -- assignment ------------------------------------------------------------------------------
def segment_expr(thresholds: pl.DataFrame, order: tuple[str, str, str] = ("_t", "_h", "_unit")) -> pl.Expr:
    """Segment index 0..3 of each unit: how many of its stratum's 3 thresholds it has reached.

    Expects the thresholds joined onto the units (columns th{k}_t, th{k}_h, th{k}_u); a null
    threshold is +infinity. `order` names the units' order columns.
    """
    ct, ch, cu = (pl.col(c) for c in order)
    terms = []
    for k in range(3):
        t, h, u = pl.col(f"th{k}_t"), pl.col(f"th{k}_h"), pl.col(f"th{k}_u")
        reached = (ct > t) | ((ct == t) & ((ch > h) | ((ch == h) & (cu >= u))))
        terms.append((u.is_not_null() & reached).cast(pl.Int8))
    return terms[0] + terms[1] + terms[2]


def assign(units: pl.LazyFrame, thresholds: pl.DataFrame) -> pl.LazyFrame:
    """Add `split` and `_copies` to units (or rows) carrying _stratum, _t, _h, _unit."""
    seg = pl.col("_seg")
    return (
        units.join(thresholds.lazy(), on="_stratum", how="left")
        .with_columns(_seg=segment_expr(thresholds))
        .with_columns(
            split=pl.when(seg <= 1).then(pl.lit("train")).when(seg == 2).then(pl.lit("val"))
            .otherwise(pl.lit("test")),
            _copies=pl.when(seg == 0).then(pl.col("copies0")).when(seg == 1)
            .then(pl.col("copies1")).otherwise(pl.lit(1, pl.Int64)),
        )
        .drop([c for c in thresholds.columns if c != "_stratum"] + ["_seg"])
    )


@dataclass(frozen=True)
class AssignBucketTask:
    bucket: int
    work: Path
    thresholds: pl.DataFrame


def assign_bucket(task: AssignBucketTask) -> int:
    """Group mode: split of every group of a bucket, written per input shard it has rows in."""
    units_path = task.work / "units" / f"b={task.bucket:05d}.parquet"
    if not (task.work / "members" / f"b={task.bucket:05d}.parquet").exists():
        return 0
    units = assign(pl.scan_parquet(str(units_path)), task.thresholds).select("_unit", "split", "_copies")
    greedy = task.work / "greedy" / f"b={task.bucket:05d}.parquet"
    if greedy.exists():
        placed = pl.scan_parquet(str(greedy)).with_columns(_copies=pl.lit(1, pl.Int64))
        units = pl.concat([units, placed.select("_unit", "split", "_copies")])
    members = pl.scan_parquet(str(task.work / "members" / f"b={task.bucket:05d}.parquet"))
    joined = members.join(units, on="_unit").sort("_shard", "_unit").collect()
    for (shard,), part in joined.partition_by("_shard", as_dict=True, maintain_order=True).items():
        write_shard(part.drop("_shard"), task.work, f"assign/s={shard:06d}/b={task.bucket:05d}.parquet")
    return joined.height


def balance_rows(rows: pl.LazyFrame, thresholds: pl.DataFrame, seed: int, id_col: str, shard: int) -> pl.LazyFrame:
    """Group mode re-balancing, exact: train rows in their own seeded order per class (the row's
    class, not its group's); rows before the class's threshold get `copies0`, the rest `copies1`
    (groups do not matter inside train)."""
    seg = segment_expr(thresholds, ("_bt", "_bh", "_bu"))
    return (
        rows.with_columns(**row_order(seed, id_col, shard))
        .join(thresholds.lazy(), on="_stratum", how="left", maintain_order="left")
        .with_columns(_copies=pl.when((pl.col("split") == "train") & pl.col("copies0").is_not_null())
                      .then(pl.when(seg == 0).then(pl.col("copies0")).otherwise(pl.col("copies1")))
                      .otherwise(pl.col("_copies")))
        .drop([c for c in thresholds.columns if c != "_stratum"] + ["_bt", "_bh", "_bu"])
    )


@dataclass
class WriteTask:
    """Pass W: one input shard's rows into per-split pieces (and undersampled rows to rejected)."""

    path: Path
    index: int
    spec: KeySpec
    work: Path
    thresholds: pl.DataFrame | None  # row mode; None in group mode (assign files instead)
    rejected: Path
    balance: pl.DataFrame | None = None  # group mode: train thresholds in the row order
    key_file: Path | None = None  # encrypt every copy of the rows: pieces and rejected rows too
    given: GivenSplit | None = None  # keep the input's own split instead of assigning one


@dataclass(frozen=True)
class GivenSplit:
    """The input's own split: a column (or `COL.key` inside a JSON column such as `meta`) and
    the split each of its values maps to; rows with another value are rejected."""

    column: str
    mapping: tuple[tuple[str, str], ...]

    def expr(self, schema: pl.Schema) -> pl.Expr:
        """The given split value of each row as a string (null when absent)."""
        if self.column in schema:
            return pl.col(self.column).cast(pl.String)
        head, _, key = self.column.partition(".")
        if key and head in schema and schema[head] == pl.String:
            return pl.col(head).str.json_path_match(f"$.{key}")
        if key and head in schema and isinstance(schema[head], pl.Struct):
            return pl.col(head).struct.field(key).cast(pl.String)
        raise InputError(f"keep_split: column {self.column!r} is not in the input "
                         f"(columns: {', '.join(schema.names())}; `meta.KEY` reads a key of the JSON `meta`)")

    def split_expr(self, schema: pl.Schema) -> pl.Expr:
        """train/val/test for mapped values, null for any other value (rejected)."""
        return self.expr(schema).replace_strict(dict(self.mapping), default=None, return_dtype=pl.String)


def write_piece(frame: pl.DataFrame, root: Path, relpath: str, key_file: Path | None) -> dict[str, Any]:
    """One piece or rejected shard, encrypted when the split is (see export.write_encrypted)."""
    if key_file is None:
        return write_shard(frame, root, relpath).__dict__
    from pipeline.split.export import write_encrypted

    return write_encrypted(frame, root, relpath, key_file).__dict__


def write_pieces(task: WriteTask) -> dict[str, Any]:
    """Assign, re-balance and write one input shard; return counts and what was written.

    Returns {"pieces": {split: rows}, "assigned": [(split, class, rows)], "final":
    [(split, class, oversampled, rows)], "rejected": ShardInfo dict or None}.
    """
    source = input_rows(task.path)
    # an input that was split before gets its `split` and `oversampled` columns replaced
    names = source.collect_schema().names()
    source = source.drop([c for c in ("split", "oversampled") if c in names])
    original = [c for c in names if c not in ("split", "oversampled")]
    keys = row_keys(source, task.spec, task.index)
    unmapped = None
    if task.given is not None:
        given = task.given.split_expr(source.collect_schema())
        rows = keys.with_columns(split=given, _given=task.given.expr(source.collect_schema()),
                                 _copies=pl.lit(1, pl.Int64)).collect()
        unmapped = rows.filter(pl.col("split").is_null())
        rows = rows.filter(pl.col("split").is_not_null()).drop("_given").lazy()
    elif task.thresholds is not None:
        rows = assign(keys, task.thresholds)
    else:
        rows = assigned_rows(keys, task.work, task.index)
        if task.balance is not None:
            rows = balance_rows(rows, task.balance, task.spec.seed, task.spec.id_col, task.index)
    rows = rows.collect()
    if rows["split"].null_count():
        raise RuntimeError(f"{rows['split'].null_count()} rows of {task.path} got no split (internal error)")
    assigned = rows.group_by("split", "_class").len().sort("split", "_class").rows()

    dropped = rows.filter(pl.col("_copies") == 0).select(*original, "split", reason=pl.lit("undersampled"))
    if unmapped is not None and unmapped.height:
        reason = pl.format("split value {} not in split_map", pl.col("_given").fill_null("null"))
        dropped = pl.concat([dropped, unmapped.select(*original, "split", reason=reason)])
    rejected_info = None
    if dropped.height:
        rejected_info = write_piece(dropped, task.rejected, f"part-{task.index:06d}.parquet", task.key_file)
    kept = rows.filter(pl.col("_copies") > 0)
    if kept.height and kept["_copies"].max() > 1:
        kept = kept.with_columns(_rep=pl.int_ranges(0, pl.col("_copies"))).explode("_rep")
    else:
        kept = kept.with_columns(_rep=pl.lit(0, pl.Int64))
    kept = kept.with_columns(
        oversampled=pl.col("_rep") > 0,
        # order inside an output shard: a seeded shuffle, distinct for every copy
        _ord=xxhash64(pl.concat_str(pl.lit(f"{task.spec.seed}:o:{task.index}:"),
                                    pl.col("_row").cast(pl.String), pl.lit(":"),
                                    pl.col("_rep").cast(pl.String))),
    )
    final = kept.group_by("split", "_class", "oversampled").len().sort("split", "_class", "oversampled").rows()
    pieces = {}
    for split in SEGMENT_SPLIT[1:]:
        part = kept.filter(pl.col("split") == split).select(*original, "split", "oversampled", "_ord")
        write_piece(part, task.work, f"pieces/{split}/s={task.index:06d}.parquet", task.key_file)
        pieces[split] = part.height
    reasons = dict(dropped.group_by("reason").len().sort("reason").rows()) if dropped.height else {}
    return {"pieces": pieces, "assigned": assigned, "final": final, "rejected": rejected_info,
            "dropped": reasons}
