"""The engine: results in order, failures name their shard, and a real external cluster."""

from __future__ import annotations

import pytest
from engine_tasks import big_result, square_or_fail

from pipeline.engine import Engine, ShardError


def test_local_engine_maps_in_order(local_engine):
    assert local_engine.map(square_or_fail, [0, 1, 2], labels=["a", "b", "c"]) == [0, 1, 4]


def test_failure_names_the_shard_locally(local_engine):
    with pytest.raises(ShardError) as info:
        local_engine.map(square_or_fail, [1, 3], labels=["shard-a.parquet", "shard-b.parquet"])
    assert info.value.label == "shard-b.parquet"
    assert "ValueError: cannot take item 3" in str(info.value)


def test_failure_names_the_shard_on_dask(dask_engine):
    assert dask_engine.map(square_or_fail, [0, 1, 2, 4]) == [0, 1, 4, 16]
    with pytest.raises(ShardError) as info:
        dask_engine.map(square_or_fail, [1, 2, 3], labels=["x/1", "x/2", "x/3"])
    assert info.value.label == "x/3"
    assert "cannot take item 3" in info.value.detail


def test_engine_describes_itself():
    assert "in-process" in Engine(workers=0).describe()
    assert "tcp://127.0.0.1:1" in Engine(scheduler="tcp://127.0.0.1:1").describe()
    assert "2 workers" in Engine(workers=2, memory_limit="1GiB").describe()


@pytest.mark.timeout(300)
def test_a_worker_that_dies_over_its_memory_limit_fails_the_map_instead_of_hanging():
    """A task whose result takes its worker over the memory limit: the nanny kills the worker
    (while it computes, or while it holds the result for the driver) and Dask recomputes it, on
    and on. The map must end with a ShardError naming the shard, not wait forever."""
    with Engine(workers=1, memory_limit="300MiB", retries=1, fetch_timeout=10, progress=False) as engine:
        with pytest.raises(ShardError) as info:
            engine.map(big_result, [400], labels=["huge.parquet"])
    assert info.value.label == "huge.parquet"
