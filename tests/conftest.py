"""Shared fixtures: the real data beside the checkout, and one Dask cluster per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("PIPELINE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; a run without it fails and says so (it must not pass silently)."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.fail(f"the shared test data is missing: expected it at {SHARED_DATA} "
                    "(set PIPELINE_SHARED_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dask_engine():
    """A real Dask LocalCluster (2 worker processes) shared by the whole session."""
    from pipeline.engine import Engine

    with Engine(workers=2, memory_limit="2GiB", progress=False) as engine:
        yield engine


@pytest.fixture()
def local_engine():
    """In-process engine (workers=0): same code path for stages, no Dask, for fast unit tests."""
    from pipeline.engine import Engine

    return Engine(workers=0, progress=False)


def licence_documents(shared_data: Path, root: Path, shards: int = 4, rows: int | None = None) -> Path:
    """The SPDX licence texts (real, 728) as a document dataset of the licence texts (`title` = licence name) in `shards` shards."""
    from pipeline.dataset import write_shard

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
