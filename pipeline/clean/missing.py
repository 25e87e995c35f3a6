"""Per-column missing-value policies and type coercion for tabular rows, as Polars expressions.

A policy names a column (a top-level column, or a field of the `meta` JSON that `fetch files`
stores for CSV columns, which is then lifted into a column of its own), an optional target type
and what to do with missing values. Order per column: null markers → null, coercion (a value
that is present but does not parse is *rejected*, reason `type:<column>`), then the missing
policy (`drop` rejects with reason `missing:<column>`; fills and interpolation replace).
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import model_validator

from pipeline.stage import Options

DTYPES: dict[str, pl.DataType] = {
    "string": pl.String(), "int": pl.Int64(), "float": pl.Float64(), "bool": pl.Boolean(),
    "date": pl.Date(), "datetime": pl.Datetime("us"),
}
RAW = "_raw:"  # prefix of the columns holding a coerced column's input values (for rejected rows)
NULL_MARKERS = ["", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "-", "?"]


class ColumnPolicy(Options):
    """What to do with one column: `[[clean.columns]]` tables in the job file."""

    column: str
    """Column name (or a key of the `meta` JSON object)."""
    dtype: Literal["string", "int", "float", "bool", "date", "datetime"] | None = None
    """Type to coerce to; a present value that does not parse sends the row to rejected/."""
    missing: Literal["keep", "drop", "constant", "mean", "median", "mode", "interpolate", "forward_fill"] = "keep"
    """Missing values: keep them, drop the row, or fill (constant `value`; mean/median/mode
    over the whole input; linear interpolation or forward fill in row order within a shard)."""
    value: str | float | int | bool | None = None
    """The fill value of `missing = "constant"`."""
    null_values: list[str] = NULL_MARKERS
    """Strings that mean "missing" (compared after stripping spaces)."""

    @model_validator(mode="after")
    def _check(self) -> ColumnPolicy:
        if self.missing == "constant" and self.value is None:
            raise ValueError(f"column {self.column!r}: missing = 'constant' needs a value")
        if self.missing in ("mean", "median", "interpolate") and self.dtype not in ("int", "float", None):
            raise ValueError(f"column {self.column!r}: {self.missing} needs a numeric dtype")
        return self


GLOBAL_FILLS = ("mean", "median", "mode")


def lift_columns(frame: pl.LazyFrame, policies: list[ColumnPolicy]) -> pl.LazyFrame:
    """Make every policy column a top-level string-or-typed column (from `meta` if needed)."""
    names = frame.collect_schema().names()
    lifted = [pl.col("meta").str.json_path_match(f"$.{p.column}").alias(p.column)
              for p in policies if p.column not in names and "meta" in names]
    return frame.with_columns(lifted) if lifted else frame


def _as_missing(policy: ColumnPolicy, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(policy.column)
    if dtype == pl.String:
        return pl.when(col.str.strip_chars().is_in(policy.null_values)).then(None).otherwise(col)
    if dtype.is_float():
        return pl.when(col.is_nan()).then(None).otherwise(col)
    return col


def _coerced(policy: ColumnPolicy, source: pl.DataType) -> pl.Expr:
    col = pl.col(policy.column)
    if policy.dtype is None:
        return col
    target = DTYPES[policy.dtype]
    if source == pl.String and policy.dtype in ("int", "float"):
        col = col.str.strip_chars().str.replace_all(r"(\d),(\d{3})", "$1$2")  # 1,234 → 1234
    if source == pl.String and policy.dtype == "bool":
        low = col.str.strip_chars().str.to_lowercase()
        return pl.when(low.is_in(["true", "yes", "1", "y", "t"])).then(True).when(
            low.is_in(["false", "no", "0", "n", "f"])).then(False).otherwise(None)
    if source == pl.String and policy.dtype in ("date", "datetime"):
        return col.str.strip_chars().str.to_datetime(strict=False).cast(target, strict=False)
    if source == pl.String and policy.dtype == "int":
        # "3.0" is an int; "3.5" is not
        as_float = col.cast(pl.Float64, strict=False)
        return pl.when(as_float == as_float.round(0)).then(as_float).otherwise(None).cast(pl.Int64, strict=False)
    return col.cast(target, strict=False)


def _prepared(frame: pl.LazyFrame, policies: list[ColumnPolicy]) -> tuple[pl.LazyFrame, list[pl.Expr]]:
    """Null markers → null and values coerced; returns the frame and a reason expression per
    policy (evaluated against the frame before coercion)."""
    frame = lift_columns(frame, policies)
    schema = frame.collect_schema()
    frame = frame.with_columns([_as_missing(p, schema[p.column]).alias(p.column) for p in policies])
    reasons, coerced = [], []
    for i, p in enumerate(policies):
        col = pl.col(p.column)
        value = _coerced(p, schema[p.column])
        reason = pl.when(col.is_not_null() & value.is_null()).then(pl.lit(f"type:{p.column}"))
        if p.missing == "drop":
            reason = reason.when(col.is_null()).then(pl.lit(f"missing:{p.column}"))
        reasons.append(reason.alias(f"_reason_{i}"))
        coerced.append(value.alias(p.column))
    return frame.with_columns(reasons).with_columns(coerced), [pl.col(f"_reason_{i}") for i in range(len(policies))]


def _statistic(col: pl.Expr, how: str) -> pl.Expr:
    return {"mean": col.mean(), "median": col.median(), "mode": col.drop_nulls().mode().sort().first()}[how]


def global_fills(frame: pl.LazyFrame, policies: list[ColumnPolicy]) -> dict:
    """The mean/median/mode of each column that needs one, over the whole input (a streaming
    aggregation over those columns only: one row comes back)."""
    wanted = [p for p in policies if p.missing in GLOBAL_FILLS]
    if not wanted:
        return {}
    prepared, _ = _prepared(frame, policies)
    row = prepared.select([_statistic(pl.col(p.column), p.missing).alias(p.column) for p in wanted])
    return row.collect(engine="streaming").row(0, named=True)


def apply_policies(frame: pl.LazyFrame, policies: list[ColumnPolicy], fills: dict) -> pl.LazyFrame:
    """Coerce, mark and fill; adds `_reject` (the first failing column's reason, else null)
    and, for each column with a `dtype`, `_raw:<column>` holding its input values (the stage
    writes those into rejected rows, so a value that did not parse is kept as it was).

    `fills` maps a column to its mean/median/mode over the whole input; a column missing
    from it (a transform called on one shard alone) uses that shard's statistic.
    """
    if not policies:
        return frame.with_columns(pl.lit(None, pl.String).alias("_reject"))
    frame = lift_columns(frame, policies)
    frame = frame.with_columns([pl.col(p.column).alias(RAW + p.column) for p in policies if p.dtype is not None])
    frame, reasons = _prepared(frame, policies)
    schema = frame.collect_schema()
    fixes = []
    for p in policies:
        col, dtype = pl.col(p.column), schema[p.column]
        if p.missing == "constant":
            fixes.append(col.fill_null(pl.lit(p.value).cast(dtype, strict=False)))
        elif p.missing in GLOBAL_FILLS:
            stat = pl.lit(fills[p.column]) if p.column in fills else _statistic(col, p.missing)
            fixes.append(col.fill_null(stat.cast(dtype, strict=False)))
        elif p.missing == "interpolate":
            fixes.append(col.interpolate().forward_fill().backward_fill().cast(dtype, strict=False))
        elif p.missing == "forward_fill":
            fixes.append(col.forward_fill())
    frame = frame.with_columns(fixes) if fixes else frame
    names = [r.meta.output_name() for r in reasons]
    return frame.with_columns(pl.coalesce(reasons).alias("_reject")).drop(names)
