"""Documents for the custom-step tests: the SPDX licence texts (real, 728 of them), as shards."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset import write_shard


def licence_documents(shared_data: Path, root: Path, shards: int = 4, rows: int | None = None) -> Path:
    """A document dataset of the licence texts (`title` = licence name) in `shards` shards."""
    lines = (shared_data / "neardup" / "spdx_licenses.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines][:rows]
    frame = pl.DataFrame({"id": [r["id"] for r in records], "title": [r["name"] for r in records],
                          "text": [r["text"] for r in records]})
    size = -(-frame.height // shards)
    for index in range(shards):
        write_shard(frame.slice(index * size, size), root, f"part-{index:05d}.parquet")
    return root


@pytest.fixture()
def licences(shared_data, tmp_path) -> Path:
    return licence_documents(shared_data, tmp_path / "licences")


@pytest.fixture()
def make_licences(shared_data):
    """licence_documents with the shared data filled in: make_licences(root, shards=8)."""
    return lambda root, shards=4, rows=None: licence_documents(shared_data, root, shards, rows)
