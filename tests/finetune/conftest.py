"""Real records for the fine-tuning tests: GSM8K and GPTeacher (../shared/data/instruct) and the
machine's licence texts as long documents."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest


@pytest.fixture(scope="session")
def gsm8k(shared_data: Path) -> pl.DataFrame:
    """GSM8K train as instruction records (first 600 problems), with ids."""
    path = shared_data / "instruct" / "gsm8k_train.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(600), handle, strict=False)]
    return pl.DataFrame(rows).select(
        pl.format("gsm8k-{}", pl.int_range(pl.len())).alias("id"),
        pl.lit("gsm8k").alias("source"),
        pl.col("question").alias("prompt"),
        pl.col("answer").alias("response"),
    )


@pytest.fixture(scope="session")
def long_documents() -> pl.DataFrame:
    """Real long texts: the licence texts Debian installs (GPL-3 is ~35,000 characters)."""
    folder = Path("/usr/share/common-licenses")
    names = ["GPL-3", "GPL-2", "LGPL-2.1", "Apache-2.0", "MPL-2.0", "Artistic"]
    texts = [(n, (folder / n).read_text(encoding="utf-8", errors="replace")) for n in names if (folder / n).is_file()]
    if len(texts) < 3:
        pytest.fail(f"expected the licence texts in {folder} (Debian's base-files)")
    return pl.DataFrame({"id": [f"doc-{n}" for n, _ in texts], "source": "licenses",
                         "text": [t for _, t in texts], "label": [n for n, _ in texts]})


def write_split_dataset(root: Path, frame: pl.DataFrame) -> Path:
    """A split-shaped dataset: `<split>/part-00000.parquet` per value of `split`."""
    for split in frame["split"].unique().sort().to_list():
        part = root / split / "part-00000.parquet"
        part.parent.mkdir(parents=True, exist_ok=True)
        frame.filter(pl.col("split") == split).write_parquet(part)
    return root
