"""Structured records (CSV, JSONL, Parquet, API, SQL) → document rows (DOC_SCHEMA), vectorised.

The mapped fields become `id`, `text`, `title`, `label`, `url`; every other field is kept in
`meta` as a JSON object, so nothing a source gave is lost.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from pipeline.hashing import doc_id
from pipeline.schema import DOC_SCHEMA, FETCHED_AT


class RecordError(ValueError):
    """A record source lacks the field its options name (the message lists the fields it has)."""


def _as_text(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String)


def _jsonable(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns JSON encoding cannot take (binary, temporal, decimal, categorical) → strings."""
    casts = []
    for name, dtype in frame.schema.items():
        if dtype == pl.Binary:
            casts.append(pl.col(name).bin.encode("base64"))
        elif dtype.is_temporal() or dtype.is_decimal() or dtype in (pl.Categorical, pl.Enum, pl.Object):
            casts.append(pl.col(name).cast(pl.String))
    return frame.with_columns(casts) if casts else frame


def records_to_docs(
    frame: pl.DataFrame,
    fields,
    source: str,
    key_prefix: str,
    row_offset: int,
    fetched_at: datetime,
) -> pl.DataFrame:
    """Map one batch of records onto DOC_SCHEMA (+ nothing else: extra fields go to `meta`).

    `fields` is a `_RecordFields` options object. Ids are doc_id("source:<id value>") with an
    id field, else doc_id("<key_prefix>:<row number>") with rows numbered from `row_offset`.
    """
    columns = set(frame.columns)
    if fields.text_field not in columns:
        raise RecordError(f"text field {fields.text_field!r} not found; the records have "
                          f"{sorted(columns)} (set --text-field)")
    if fields.id_field and fields.id_field not in columns:
        raise RecordError(f"id field {fields.id_field!r} not found; the records have {sorted(columns)}")
    used = {fields.text_field}
    exprs: dict[str, pl.Expr] = {"text": _as_text(fields.text_field)}
    for target, name in (("title", fields.title_field), ("label", fields.label_field), ("url", fields.url_field)):
        if name and name in columns:
            exprs[target] = _as_text(name)
            used.add(name)
        else:
            exprs[target] = pl.lit(None, pl.String)
    if fields.id_field:
        key = pl.lit(f"{source}:") + _as_text(fields.id_field).fill_null("")
        used.add(fields.id_field)
    else:
        key = pl.lit(f"{key_prefix}:") + (pl.int_range(pl.len(), dtype=pl.Int64) + row_offset).cast(pl.String)
    others = [c for c in frame.columns if c not in used]
    if others:
        meta = pl.struct(others).struct.json_encode()
        frame = _jsonable(frame.select(others)).with_columns(frame.select(list(used)))
    else:
        meta = pl.lit("{}")
    return frame.select(
        doc_id(key).alias("id"),
        pl.lit(source).alias("source"),
        exprs["url"].alias("url"),
        pl.lit(fetched_at).cast(FETCHED_AT).alias("fetched_at"),
        exprs["title"].alias("title"),
        exprs["text"].alias("text"),
        exprs["label"].alias("label"),
        meta.alias("meta"),
    ).cast(DOC_SCHEMA)
