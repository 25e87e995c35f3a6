"""Turn raw fetched pages into documents: the main text of each HTML page, boilerplate dropped.

Reads a raw dataset (fetch's RAW_SCHEMA: url, final_url, status, content_type, headers, body,
...) and writes documents (DOC_SCHEMA: id, source, url, fetched_at, title, text, label, meta).
Menus, cookie banners, footers, share bars and related-link lists are left out; headings,
paragraphs, lists, tables and code are kept, separated by blank lines. Rows that are not an
HTML page with text go to rejected/<output>/ with a reason (fetch_error, http_status, empty_body,
not_html, too_large, binary, unparsable, empty_text). Example:

    pipeline extract --input out/raw --output out/docs
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field, field_validator

from pipeline.engine import Engine
from pipeline.errors import InputError, require_columns
from pipeline.extract.content import ExtractError, extract_html
from pipeline.hashing import doc_id
from pipeline.schema import DOC_SCHEMA, RAW_SCHEMA
from pipeline.stage import REASON, ShardOutput, Stage, StageResult
from pipeline.stage import Options as StageOptions

__all__ = ["Extract", "Options", "run", "extract_shard", "extract_html", "ExtractError"]


class Options(StageOptions):
    html_types: list[str] = ["text/html", "application/xhtml+xml"]
    """Content types treated as HTML (the part before `;`); a row with another type is
    rejected as not_html. A row with no content type is sniffed (does it start like HTML?)."""

    min_chars: int = Field(default=1, ge=1)
    """Rows whose extracted text is shorter than this many characters are rejected as
    empty_text."""

    max_body_mb: float = Field(default=32.0, gt=0)
    """Bodies larger than this many megabytes are rejected as too_large (a 10 MB page takes
    about a second)."""

    @field_validator("html_types")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("html_types needs at least one content type")
        return [v.strip().lower() for v in value]


_RAW_COLUMNS = list(RAW_SCHEMA)
_SNIFF = (b"<!doctype", b"<html", b"<head", b"<body", b"<meta", b"<title", b"<div", b"<p",
          b"<?xml", b"<!--", b"<table", b"<h1")


def _looks_like_html(body: bytes) -> bool:
    head = body[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(_SNIFF) or b"<html" in head or b"<body" in head


def _header_content_type(headers: str | None) -> str | None:
    if not headers:
        return None
    try:
        parsed = json.loads(headers)
    except ValueError:
        return None
    if isinstance(parsed, dict):
        for key, value in parsed.items():
            if key.lower() == "content-type" and isinstance(value, str):
                return value
    return None


def classify_row(row: dict[str, Any], options: Options) -> tuple[str | None, dict | None]:
    """(reject reason, None) or (None, extraction result) for one raw row."""
    if row.get("error"):
        return "fetch_error", None
    status = row.get("status")
    if status is not None and not 200 <= status < 300:
        return "http_status", None
    body = row.get("body")
    if not body:
        return "empty_body", None
    content_type = row.get("content_type") or _header_content_type(row.get("headers"))
    if content_type:
        if content_type.split(";")[0].strip().lower() not in options.html_types:
            return "not_html", None
    elif not _looks_like_html(body):
        return "not_html", None
    if len(body) > options.max_body_mb * 1e6:
        return "too_large", None
    try:
        result = extract_html(body, row.get("final_url") or row.get("url"), content_type)
    except ExtractError as error:
        return ("binary" if str(error) == "binary" else "unparsable"), None
    if len(result["text"]) < options.min_chars:
        return "empty_text", None
    return None, result


def extract_shard(frame: pl.LazyFrame, options: Options) -> ShardOutput:
    """Per-shard transform: raw rows → documents (`main`) and dropped rows (`rejected`)."""
    raw = frame.collect()
    missing = [c for c in _RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(f"extract needs raw pages ({', '.join(_RAW_COLUMNS)}); missing {missing}")
    raw = raw.select(_RAW_COLUMNS)
    keep_rows: list[int] = []
    titles, texts, urls, metas = [], [], [], []
    reasons: list[str] = []
    for index, row in enumerate(raw.iter_rows(named=True)):
        reason, result = classify_row(row, options)
        if reason is not None:
            reasons.append(reason)
            continue
        keep_rows.append(index)
        final_url = row["final_url"] or row["url"]
        meta = {k: result[k] for k in ("lang", "canonical", "date", "description") if result[k]}
        meta["encoding"] = result["encoding"]
        if result["encoding_source"] == "guessed":  # no BOM, no declaration, not UTF-8: say so
            meta["encoding_guessed"] = True
        if row["final_url"] and row["final_url"] != row["url"]:
            meta["requested_url"] = row["url"]
        titles.append(result["title"])
        texts.append(result["text"])
        urls.append(final_url)
        metas.append(json.dumps(meta, ensure_ascii=False, sort_keys=True))
    kept_mask = pl.Series([False] * raw.height, dtype=pl.Boolean)
    kept_mask = kept_mask.scatter(keep_rows, True) if keep_rows else kept_mask
    kept = raw.filter(kept_mask)
    docs = pl.DataFrame({
        "id_key": kept["url"],
        "source": kept["source"],
        "url": pl.Series(urls, dtype=pl.String),
        "fetched_at": kept["fetched_at"],
        "title": pl.Series(titles, dtype=pl.String),
        "text": pl.Series(texts, dtype=pl.String),
        "meta": pl.Series(metas, dtype=pl.String),
    })
    docs = docs.with_columns(
        doc_id(pl.col("id_key")).alias("id"), pl.lit(None, dtype=pl.String).alias("label")
    ).select([pl.col(name).cast(dtype) for name, dtype in DOC_SCHEMA.items()])
    rejected = raw.filter(~kept_mask).with_columns(pl.Series(REASON, reasons, dtype=pl.String))
    return ShardOutput(frames={"main": docs, "rejected": rejected},
                       counts={"text_chars": sum(len(t) for t in texts)})


class Extract(Stage):
    """See the module docstring."""

    name = "extract"
    Options = Options
    secondary = ("rejected",)
    transform = staticmethod(extract_shard)

    def check(self, schema: dict, dataset: Path) -> None:
        require_columns(self.name, dataset, schema, _RAW_COLUMNS,
                        hint="extract reads raw pages as `pipeline fetch` writes them")


def run(inputs: list[Path], output: Path, options: Options, engine: Engine,
        fresh: bool = False) -> StageResult:
    """Extract every shard of the raw inputs into documents at OUTPUT (drops → rejected/)."""
    return Extract(options).run(inputs, output, engine, fresh=fresh)
