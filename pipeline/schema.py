"""The contract between stages: the raw page schema and the document schema.

Stages add their own columns (quality flags, `near_group`, `cluster`, `label_confidence`,
`split`) and never rename these.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

FETCHED_AT = pl.Datetime("us", "UTC")

# what `fetch` writes for pages (crawl, local HTML/WARC files); `extract` reads it
RAW_SCHEMA: dict[str, pl.DataType] = {
    "url": pl.String(),
    "final_url": pl.String(),
    "status": pl.Int32(),
    "content_type": pl.String(),
    "headers": pl.String(),  # JSON object
    "body": pl.Binary(),
    "fetched_at": FETCHED_AT,
    "source": pl.String(),
    "error": pl.String(),  # null when the fetch succeeded
}

# what `extract` writes and what `fetch` writes for structured records (CSV, JSONL, SQL, API)
DOC_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),  # pipeline.hashing.doc_id of the source key (url, or source + record key)
    "source": pl.String(),
    "url": pl.String(),
    "fetched_at": FETCHED_AT,
    "title": pl.String(),
    "text": pl.String(),
    "label": pl.String(),
    "meta": pl.String(),  # JSON object
}


def rejected_folder(output: Path) -> Path:
    """Where a stage writing OUTPUT puts rows it drops: a sibling `rejected/<name>/`.

    In a job, clean/ → rejected/clean/, extract's docs/ → rejected/docs/. Each rejected row
    keeps its columns and adds `reason` (see pipeline.stage.REASON).
    """
    return output.parent / "rejected" / output.name
