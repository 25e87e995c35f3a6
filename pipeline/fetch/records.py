"""Structured records (CSV, JSONL, JSON, Parquet, API, SQL) → document rows, vectorised.

The mapped fields become `id`, `text`, `title`, `label`, `url`; every other field is kept in
`meta` as a JSON object, so nothing a source gave is lost. Instruction and chat records
(pipeline.records) become RECORD_SCHEMA rows with a `reason` for the invalid ones.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from pipeline.hashing import doc_id
from pipeline.records import (
    RECORD_COLUMNS,
    RECORD_SCHEMA,
    detect_format,
    read_chat,
    read_instruction,
    record_rejection,
    record_text,
    used_fields,
)
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
    _check_text_field(frame, fields.text_field)
    return _map_fields(frame, fields, {fields.text_field}, {"text": _as_text(fields.text_field)},
                       source, key_prefix, row_offset, fetched_at).cast(DOC_SCHEMA)


def _check_text_field(frame: pl.DataFrame, name: str) -> None:
    dtype = frame.schema[name]
    if not dtype.is_nested():
        return
    inner = dtype.inner if isinstance(dtype, pl.List) else None
    keys = {f.name for f in inner.fields} if isinstance(inner, pl.Struct) else set()
    if {"role", "content"} <= keys or {"from", "value"} <= keys:
        raise RecordError(f"text field {name!r} holds conversations ({dtype}), not text: read these "
                          "records with --kind chat (formats openai, sharegpt)")
    raise RecordError(f"text field {name!r} holds {dtype}, not text; name a text field with --text-field")


def records_to_kind(
    frame: pl.DataFrame,
    fields,
    kind: str,
    record_format: str,
    source: str,
    key_prefix: str,
    row_offset: int,
    fetched_at: datetime,
) -> pl.DataFrame:
    """Map one batch of records onto RECORD_SCHEMA plus `reason` (null for a valid record).

    `kind` is "instruction" or "chat"; `record_format` a layout of pipeline.records (or "auto":
    detected from the batch's fields). `text` is the record's rendering; ids as in
    `records_to_docs`. Fields the layout does not read go to `meta`.
    """
    fmt = detect_format(frame.schema) if record_format == "auto" else record_format
    if fields.id_field and fields.id_field not in frame.columns:
        raise RecordError(f"id field {fields.id_field!r} not found; the records have {sorted(frame.columns)}")
    used = used_fields(fmt, frame.columns)
    if kind == "instruction":
        parts = read_instruction(frame, fmt).with_columns(pl.lit(None, RECORD_COLUMNS["messages"]).alias("messages"))
    else:
        parts = read_chat(frame, fmt).with_columns(pl.lit(None, pl.String).alias(c) for c in ("system", "prompt", "response"))
    parts = parts.with_columns(pl.lit(kind).alias("kind"))
    docs = _map_fields(frame, fields, used, {"text": pl.lit(None, pl.String)}, source, key_prefix,
                       row_offset, fetched_at)
    docs = pl.concat([docs, parts], how="horizontal")
    docs = docs.with_columns(record_text().alias("text"), record_rejection().alias("reason"))
    return docs.select([*RECORD_SCHEMA, "reason"]).cast({**RECORD_SCHEMA, "reason": pl.String})


def _map_fields(frame: pl.DataFrame, fields, used: set[str], exprs: dict[str, pl.Expr], source: str,
                key_prefix: str, row_offset: int, fetched_at: datetime) -> pl.DataFrame:
    """The document columns of a batch: `exprs` (text), title/label/url from their fields, the id,
    and every field not in `used` (nor a document field) as `meta` JSON."""
    columns = set(frame.columns)
    if fields.id_field and fields.id_field not in columns:
        raise RecordError(f"id field {fields.id_field!r} not found; the records have {sorted(columns)}")
    used = set(used)
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
    )
