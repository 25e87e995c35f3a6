"""Per-shard profiles: the small aggregates a report is built from, and a bounded sample.

`profile_shard` runs on a worker over one shard and returns counts only (rows, nulls, empty
fields, out-of-range values, rows/words/chars/bytes per source × split × label, length
histograms, reasons, duplicate kinds and similarities, cluster sizes) plus the bottom-k
sampling hashes of each split. `merge_profiles` adds them up on the driver. `sample_shard`
returns the rows whose hash falls under the global k-th smallest hash of their split, so the
sample is a uniform, seed-determined subset of at most `sample_rows` rows per split, whatever
the number of shards.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.hashing import xxhash64

NONE = "(none)"
TOKENS = "n_tokens"  # the tokens stage's column
SNIPPET_CHARS = 300  # characters of a text shown as an example
ALL = "all"
SIMILARITY_BINS = 20  # histogram of duplicate similarity over [0, 1]
NESTED = ("list", "large_list", "fixed_size_list", "struct", "map", "array")
STRINGS = ("string", "large_string", "utf8", "large_utf8", "string_view")

# value checks: column → (description, expression that is true for an out-of-range value)
RANGE_CHECKS: dict[str, tuple[str, Any]] = {
    "label_confidence": ("outside [0, 1]", lambda c: (c < 0) | (c > 1) | c.is_nan()),
    "cluster_distance": ("negative or NaN", lambda c: (c < 0) | c.is_nan()),
    "similarity": ("outside [0, 1]", lambda c: (c < 0) | (c > 1) | c.is_nan()),
    "status": ("not an HTTP status (100-599)", lambda c: (c < 100) | (c > 599)),
    "split": ("not train/val/test", lambda c: ~c.is_in(["train", "val", "test"])),
}


@dataclass
class ProfileTask:
    """One shard to profile (pickled to a worker: paths, names and numbers only)."""

    dataset: str
    shard: Path
    kind: str
    columns: dict[str, str]
    constants: dict[str, str]  # Hive partition values / split folder of this shard
    final: bool
    text_column: str
    label_column: str
    seed: int
    sample_rows: int
    thresholds: dict[str, int] = field(default_factory=dict)
    key_file: str | None = None  # the key file of an encrypted shard (split --encrypt-key-file)
    examples: int = 3  # example rows kept per drop reason and duplicate groups shown


def _is_nested(dtype: str) -> bool:
    return any(dtype.startswith(n) for n in NESTED)


def _is_string(dtype: str) -> bool:
    return dtype in STRINGS


def scan_shard(task: ProfileTask) -> pl.LazyFrame:
    if task.key_file is not None:  # Polars cannot decrypt: pyarrow reads the shard (one shard's memory)
        from pipeline.split.export import read_encrypted

        frame = pl.from_arrow(read_encrypted(task.shard, Path(task.key_file))).lazy()
    else:
        frame = pl.scan_parquet(str(task.shard), hive_partitioning=False)
    present = set(frame.collect_schema().names())
    extra = {k: pl.lit(v) for k, v in task.constants.items() if k not in present}
    return frame.with_columns(**extra) if extra else frame


def sample_key(task: ProfileTask, present: set[str]) -> pl.Expr:
    """The row's sampling hash: xxHash64 of seed and id (text when there is no id)."""
    key = "id" if "id" in present else task.text_column
    return xxhash64(pl.concat_str(pl.lit(f"{task.seed}:"), pl.col(key).cast(pl.String).fill_null("")))


def _split_expr(present: set[str]) -> pl.Expr:
    return pl.col("split").cast(pl.String).fill_null(NONE) if "split" in present else pl.lit(ALL)


def _key_expr(name: str, present: set[str]) -> pl.Expr:
    if name not in present:
        return pl.lit(NONE)
    return pl.col(name).cast(pl.String).fill_null(NONE)


def profile_shard(task: ProfileTask) -> dict[str, Any]:
    """Counts of one shard (see the module docstring); nothing row-sized comes back.

    A shard whose data cannot be read (e.g. split's encrypted export) is counted from its footer
    and reported with the error, instead of failing the whole report.
    """
    try:
        metadata = pq.ParquetFile(task.shard).metadata
    except Exception as error:  # noqa: BLE001 - reported per shard in metrics.json
        return {"dataset": task.dataset, "rows": 0, "schema": None,
                "error": f"{task.shard.name}: {type(error).__name__}: {str(error)[:300]}"}
    arrow = metadata.schema.to_arrow_schema()
    footer = {"schema": [(f.name, str(f.type)) for f in arrow]}
    try:
        # an encrypted shard's column statistics cannot be touched without the keys
        known_nulls = {} if task.key_file is not None else footer_null_counts(metadata)
        return {**_profile_shard(task, known_nulls), **footer}
    except Exception as error:  # noqa: BLE001 - e.g. encrypted columns: counted from the footer
        return {"dataset": task.dataset, "rows": metadata.num_rows, **footer,
                "error": f"{task.shard.name}: {type(error).__name__}: {str(error)[:300]}"}


def footer_null_counts(metadata: pq.FileMetaData) -> dict[str, int]:
    """Null counts of top-level flat columns from the row-group statistics (no data read);
    columns without statistics in every row group are left out (and counted from the data)."""
    counts: dict[str, int] = {}
    missing: set[str] = set()
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for j in range(group.num_columns):
            column = group.column(j)
            name = column.path_in_schema
            if "." in name:
                missing.add(name.split(".", 1)[0])
                continue
            stats = column.statistics
            if stats is None or not stats.has_null_count:
                missing.add(name)
                continue
            counts[name] = counts.get(name, 0) + int(stats.null_count)
    return {k: v for k, v in counts.items() if k not in missing}


def _profile_shard(task: ProfileTask, known_nulls: dict[str, int]) -> dict[str, Any]:
    frame = scan_shard(task)
    schema = frame.collect_schema()
    present = set(schema.names())
    dtypes = {name: task.columns.get(name, "string") for name in present}
    plain = [c for c in present if not _is_nested(dtypes[c])]
    strings = [c for c in plain if isinstance(schema[c], pl.String)]
    text = task.text_column

    exprs: list[pl.Expr] = [pl.len().alias("__rows")]
    exprs += [pl.col(c).null_count().alias(f"null:{c}") for c in plain if c not in known_nulls]
    # blank = only whitespace; a match, not strip_chars, which copies every string first
    exprs += [pl.col(c).str.contains(r"^\s*$").sum().alias(f"empty:{c}") for c in strings]
    for column, (_, check) in RANGE_CHECKS.items():
        if column in present and column in plain:
            col = pl.col(column)
            if column == "split":
                exprs.append(check(col.cast(pl.String)).fill_null(False).sum().alias(f"range:{column}"))
            elif schema[column].is_numeric():
                bad = check(col.cast(pl.Float64)).fill_null(False)
                exprs.append(bad.sum().alias(f"range:{column}"))
    if "fetched_at" in present and isinstance(schema["fetched_at"], pl.Datetime):
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        exprs.append((pl.col("fetched_at").dt.replace_time_zone(None)
                      > pl.lit(tomorrow.replace(tzinfo=None))).fill_null(False).sum().alias("range:fetched_at"))
    totals = frame.select(exprs).collect().row(0, named=True)
    out: dict[str, Any] = {
        "dataset": task.dataset,
        "rows": int(totals["__rows"]),
        "nulls": {**{c: n for c, n in known_nulls.items() if c in plain},
                  **{k[5:]: int(v) for k, v in totals.items() if k.startswith("null:")}},
        "empty": {k[6:]: int(v) for k, v in totals.items() if k.startswith("empty:")},
        "out_of_range": {k[6:]: int(v) for k, v in totals.items() if k.startswith("range:")},
    }
    if "reason" in present:
        out["reasons"] = _counts(frame, pl.col("reason").cast(pl.String).fill_null(NONE))
    if task.kind == "audit" and "kind" in present:
        out["dup_kinds"] = _counts(frame, pl.col("kind").cast(pl.String).fill_null(NONE))
        if "similarity" in present:
            binned = (pl.col("similarity").cast(pl.Float64).clip(0, 1) * SIMILARITY_BINS).floor()
            rows = (frame.filter(pl.col("similarity").is_not_null() & pl.col("similarity").is_not_nan())
                    .select(pl.col("kind").cast(pl.String).fill_null(NONE),
                            binned.clip(0, SIMILARITY_BINS - 1).cast(pl.Int32).alias("bin"))
                    .group_by("kind", "bin").len().collect())
            out["similarity_bins"] = {(k, int(b)): int(n) for k, b, n in rows.iter_rows()}
    if "cluster" in present and not _is_nested(dtypes["cluster"]):
        out["clusters"] = _counts(frame, pl.col("cluster").cast(pl.String).fill_null(NONE))
    if "near_group" in present:
        out["near_group_rows"] = int(frame.select(pl.col("near_group").is_not_null().sum()).collect().item())
    label = task.label_column
    if label in present and not _is_nested(dtypes[label]):
        out["labels"] = _counts(frame, pl.col(label).cast(pl.String).fill_null(NONE))
    if task.final and TOKENS in present and schema[TOKENS].is_numeric():
        out.update(_token_profile(frame, present))
    if task.examples and task.kind == "rejected" and "reason" in present:
        out["reason_examples"] = _reason_examples(task, frame, present)
    if task.examples and task.kind == "audit" and "kept_id" in present:
        out["group_examples"] = _group_examples(task, frame, present)
    if task.final and text in present:
        out.update(_text_profile(task, frame, present))
    return out


def _token_profile(frame: pl.LazyFrame, present: set[str]) -> dict[str, Any]:
    """Token-length histogram per split (bucket b: 2^b - 1 <= n_tokens <= 2^(b+1) - 2) and totals."""
    tokens = pl.col(TOKENS).cast(pl.Int64)
    measured = frame.select(_split_expr(present).alias("split"), tokens.alias("n")).drop_nulls("n")
    hist = (measured.select("split", (pl.col("n") + 1).log(2).floor().cast(pl.Int32).alias("bucket"))
            .group_by("split", "bucket").len().collect())
    totals = measured.group_by("split").agg(pl.len().alias("rows"), pl.col("n").sum().alias("sum"),
                                            pl.col("n").max().alias("max")).collect()
    return {"token_hist": {(s, int(b)): int(n) for s, b, n in hist.iter_rows()},
            "token_totals": {s: [int(r), int(t), int(m)] for s, r, t, m in totals.iter_rows()}}


def snippet(present: set[str], text_column: str) -> pl.Expr:
    """A row's text cut to SNIPPET_CHARS (the prompt for records without a text)."""
    text = pl.col(text_column).cast(pl.String) if text_column in present else pl.lit(None, pl.String)
    if "prompt" in present:
        text = pl.coalesce(text, pl.col("prompt").cast(pl.String))
    return text.fill_null("").str.slice(0, SNIPPET_CHARS)


def _id_expr(present: set[str]) -> pl.Expr:
    return pl.col("id").cast(pl.String) if "id" in present else pl.lit(None, pl.String)


def _reason_examples(task: ProfileTask, frame: pl.LazyFrame, present: set[str]) -> list[tuple]:
    """Per reason the `examples` rows with the smallest seeded hash: (reason, hash, id, text).
    The driver keeps the smallest over all shards, so the choice does not depend on sharding."""
    rows = (frame.select(pl.col("reason").cast(pl.String).fill_null(NONE).alias("reason"),
                         sample_key(task, present).alias("h"), _id_expr(present).alias("id"),
                         snippet(present, task.text_column).alias("text"))
            .group_by("reason").agg(pl.all().bottom_k_by("h", task.examples)).explode("h", "id", "text")
            .collect())
    return rows.rows()


def _group_examples(task: ProfileTask, frame: pl.LazyFrame, present: set[str]) -> list[tuple]:
    """Every audit row of the `examples` groups (kept_id) with the smallest seeded hashes in this
    shard: (group hash, kept_id, id, kind, similarity, text). A group among the smallest overall
    is among the smallest of every shard that holds a member, so the driver sees all members."""
    group = xxhash64(pl.concat_str(pl.lit(f"{task.seed}:"), pl.col("kept_id").cast(pl.String).fill_null("")))
    rows = frame.select(
        group.alias("g"), pl.col("kept_id").cast(pl.String), _id_expr(present).alias("id"),
        (pl.col("kind").cast(pl.String) if "kind" in present else pl.lit(None, pl.String)).alias("kind"),
        (pl.col("similarity").cast(pl.Float64) if "similarity" in present else pl.lit(None, pl.Float64)).alias("similarity"),
        snippet(present, task.text_column).alias("text"),
    ).collect()
    chosen = rows["g"].unique().bottom_k(task.examples)
    return rows.filter(pl.col("g").is_in(chosen.implode())).sort("g", "id").rows()


def _counts(frame: pl.LazyFrame, key: pl.Expr) -> dict[str, int]:
    rows = frame.select(key.alias("k")).group_by("k").len().collect()
    return {str(k): int(n) for k, n in rows.iter_rows()}


def _text_profile(task: ProfileTask, frame: pl.LazyFrame, present: set[str]) -> dict[str, Any]:
    text = pl.col(task.text_column).fill_null("")
    words = text.str.count_matches(r"\w+").cast(pl.Int64)
    # one read of the text: the per-row numbers (no text) are small, the three summaries use them
    measured = frame.select(
        _key_expr("source", present).alias("source"),
        _split_expr(present).alias("split"),
        _key_expr(task.label_column, present).alias("label"),
        words.alias("words"),
        text.str.len_chars().cast(pl.Int64).alias("chars"),
        text.str.len_bytes().cast(pl.Int64).alias("bytes"),
        sample_key(task, present).alias("h"),
    ).collect()
    groups = (measured.group_by("source", "split", "label", maintain_order=True)
              .agg(pl.len().alias("rows"), pl.col("words").sum(), pl.col("chars").sum(), pl.col("bytes").sum()))
    bucket = (pl.col("words") + 1).log(2).floor().cast(pl.Int32).alias("bucket")
    hist = measured.select("split", bucket).group_by("split", "bucket").len()
    bottom = measured.group_by("split").agg(pl.col("h").bottom_k(task.sample_rows))
    return {
        "groups": groups.rows(),  # (source, split, label, rows, words, chars, bytes)
        "length_hist": {(s, int(b)): int(n) for s, b, n in hist.iter_rows()},
        "bottom_hashes": {s: np.asarray(h, dtype=np.uint64) for s, h in bottom.iter_rows()},
    }


def sample_shard(task: ProfileTask) -> pl.DataFrame | None:
    """Rows of one shard whose sampling hash is at most their split's threshold (None when the
    shard cannot be read; profile_shard has reported why)."""
    try:
        return _sample_shard(task)
    except Exception:  # noqa: BLE001
        return None


def _sample_shard(task: ProfileTask) -> pl.DataFrame:
    frame = scan_shard(task)
    present = set(frame.collect_schema().names())
    split = _split_expr(present).alias("split")
    thresholds = pl.DataFrame(
        {"split": list(task.thresholds), "threshold": list(task.thresholds.values())},
        schema={"split": pl.String, "threshold": pl.UInt64},
    ).lazy()
    return (frame.select(
        (pl.col("id").cast(pl.String) if "id" in present else pl.lit(None, pl.String)).alias("id"),
        _key_expr("source", present).alias("source"),
        split,
        (pl.col(task.label_column).cast(pl.String) if task.label_column in present
         else pl.lit(None, pl.String)).alias("label"),
        pl.col(task.text_column).cast(pl.String).fill_null("").alias("text"),
        sample_key(task, present).alias("h"),
    ).join(thresholds, on="split", how="inner")
        .filter(pl.col("h") <= pl.col("threshold")).drop("threshold").collect())


def thresholds_from(bottoms: list[dict[str, np.ndarray]], k: int) -> dict[str, int]:
    """Per split, the k-th smallest sampling hash over every shard (all rows when fewer)."""
    merged: dict[str, list[np.ndarray]] = defaultdict(list)
    for bottom in bottoms:
        for split, hashes in bottom.items():
            merged[split].append(hashes)
    out = {}
    for split, parts in merged.items():
        values = np.concatenate(parts)
        if values.size == 0:
            continue
        out[split] = int(np.partition(values, min(k, values.size) - 1)[min(k, values.size) - 1])
    return out


@dataclass
class Profile:
    """The sum of a dataset's shard profiles."""

    rows: int = 0
    nulls: Counter = field(default_factory=Counter)
    empty: Counter = field(default_factory=Counter)
    out_of_range: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    dup_kinds: Counter = field(default_factory=Counter)
    similarity_bins: Counter = field(default_factory=Counter)
    clusters: Counter = field(default_factory=Counter)
    near_group_rows: int = 0
    groups: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    length_hist: Counter = field(default_factory=Counter)
    bottom_hashes: list[dict[str, np.ndarray]] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    token_hist: Counter = field(default_factory=Counter)
    token_totals: dict[str, list[int]] = field(default_factory=dict)
    reason_examples: list[tuple] = field(default_factory=list)
    group_examples: list[tuple] = field(default_factory=list)
    has_text: bool = False
    errors: list[str] = field(default_factory=list)


def merge_profiles(parts: list[dict[str, Any]]) -> Profile:
    profile = Profile()
    for part in parts:
        profile.rows += part["rows"]
        if "error" in part:
            profile.errors.append(part["error"])
        for name in ("nulls", "empty", "out_of_range", "reasons", "dup_kinds", "similarity_bins",
                     "clusters", "length_hist", "labels", "token_hist"):
            getattr(profile, name).update(part.get(name, {}))
        for split, (rows, total, longest) in part.get("token_totals", {}).items():
            acc = profile.token_totals.setdefault(split, [0, 0, 0])
            acc[0], acc[1], acc[2] = acc[0] + rows, acc[1] + total, max(acc[2], longest)
        profile.reason_examples += part.get("reason_examples", [])
        profile.group_examples += part.get("group_examples", [])
        profile.near_group_rows += part.get("near_group_rows", 0)
        if "groups" in part:
            profile.has_text = True
            for source, split, label, rows, words, chars, nbytes in part["groups"]:
                acc = profile.groups.setdefault((source, split, label), [0, 0, 0, 0])
                for i, v in enumerate((rows, words, chars, nbytes)):
                    acc[i] += int(v)
            profile.bottom_hashes.append(part["bottom_hashes"])
    return profile


def entropy_bits(counts: list[int]) -> float:
    """Shannon entropy (bits) of a count vector; 0 for one class or none."""
    total = sum(counts)
    if total <= 0:
        return 0.0
    return float(-sum((c / total) * math.log2(c / total) for c in counts if c > 0))
