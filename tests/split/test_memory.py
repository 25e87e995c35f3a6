"""Memory stays flat as the input grows: 4x the shards, same shard size, about the same peak.

The stage runs in a child process in-process (--workers 0, so every pass is in that one
process) and reports its own peak resident set. Slow: `make test-slow`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

CHILD = """
import resource, sys
from pathlib import Path
from pipeline import split
from pipeline.engine import Engine
split.run([Path(sys.argv[1])], Path(sys.argv[2]),
          split.Options(stratify="label", group="near_group", balance="oversample", shard_rows=10_000),
          Engine(workers=0, progress=False))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def corpus(rows: pl.DataFrame, root: Path, shards: int) -> Path:
    """`shards` copies of the rotten_tomatoes docs (13,905 rows each) with fresh ids and groups."""
    root.mkdir(parents=True)
    for i in range(shards):
        part = rows.with_columns(id=pl.concat_str(pl.lit(f"{i}:"), pl.col("id")),
                                 near_group=pl.concat_str(pl.lit(f"{i}:"), pl.col("near_group")))
        part.write_parquet(root / f"part-{i:05d}.parquet")
    return root


def peak_kib(inputs: Path, output: Path) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, str(inputs), str(output)],
                          check=True, capture_output=True, text=True, timeout=900)
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_shards(rotten_docs, tmp_path):
    rows = pl.read_parquet(str(rotten_docs / "*.parquet"))
    small = peak_kib(corpus(rows, tmp_path / "x4", 4), tmp_path / "out4")
    large = peak_kib(corpus(rows, tmp_path / "x16", 16), tmp_path / "out16")
    print(f"peak resident set: 4 shards {small / 1024:.0f} MiB, 16 shards {large / 1024:.0f} MiB")
    assert large <= 1.25 * small, (small, large)
