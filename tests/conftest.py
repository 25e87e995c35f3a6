"""Shared fixtures: the real data beside the checkout, and one Dask cluster per test session."""

from __future__ import annotations

import os
from pathlib import Path

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
