"""`pipeline report` on encrypted splits (issue #17 item 15): it aborted the whole process
(pyarrow's C++ terminate, rc 134). Now the encrypted shards are skipped with a message, or
read with the key file split used."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pipeline import split
from pipeline.dataset import write_shard
from pipeline.hashing import doc_id
from pipeline.report import METRICS_NAME, Options
from pipeline.report import run as run_report

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def encrypted_splits(shared_data, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(docs, splits encrypted with keys.json, keys.json) of the 5,574 real SMS."""
    from pipeline.engine import Engine

    root = tmp_path_factory.mktemp("enc")
    sms = pl.read_csv(shared_data / "labelled" / "sms_spam.tsv", separator="\t", quote_char=None,
                      has_header=True, new_columns=["label", "text"]).with_row_index("row")
    docs = sms.select(
        id=doc_id(pl.concat_str(pl.lit("sms:"), pl.col("row").cast(pl.String))), source=pl.lit("sms"),
        url=pl.lit(None, pl.String), fetched_at=pl.lit(None, pl.Datetime("us", "UTC")),
        title=pl.lit(None, pl.String), text="text", label="label", meta=pl.lit("{}"))
    for i in range(2):
        write_shard(docs.slice(i * 2787, 2787), root / "docs", f"part-{i:05d}.parquet")
    keys = root / "keys.json"
    keys.write_text(json.dumps({"footer": base64.b64encode(os.urandom(32)).decode(),
                                "columns": base64.b64encode(os.urandom(16)).decode()}))
    os.chmod(keys, 0o600)
    split.run([root / "docs"], root / "splits", split.Options(stratify="label", encrypt_key_file=keys),
              Engine(workers=0, progress=False))
    return root / "docs", root / "splits", keys


def test_report_without_the_key_skips_encrypted_splits_with_a_message(encrypted_splits, tmp_path):
    docs, splits, _ = encrypted_splits
    # a process of its own: the old failure was an abort that no try/except can catch
    done = subprocess.run([sys.executable, "-m", "pipeline", "report", "--input", str(docs), "--input", str(splits),
                           "--output", str(tmp_path / "report"), "--workers", "0"],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 encrypted shards (5,574 rows) not read; pass --decrypt-key-file" in done.stderr
    metrics = json.loads((tmp_path / "report" / METRICS_NAME).read_text())
    assert [s["rows"] for s in metrics["skipped"]] == [5574]
    assert metrics["final_datasets"] == ["docs"]  # the plaintext input is still reported
    assert metrics["volume"]["rows"] == 5574
    page = (tmp_path / "report" / "index.html").read_text()
    assert "encrypted shards (5,574 rows) not read" in page


def test_report_with_the_key_reads_encrypted_splits(encrypted_splits, tmp_path, local_engine):
    _, splits, keys = encrypted_splits
    result = run_report([splits], tmp_path / "report", Options(decrypt_key_file=keys, sample_rows=500), local_engine)
    metrics = json.loads((tmp_path / "report" / METRICS_NAME).read_text())
    assert metrics["skipped"] == [] and result.rows_out == 5574
    by_split = metrics["volume"]["by_split"]
    assert {s: v["rows"] for s, v in by_split.items()} == {"train": 4458, "val": 558, "test": 558}
    classes = metrics["balance"]["per_split"]["test"]["counts"]
    assert Counter(classes) == Counter({"ham": 483, "spam": 75})
    assert metrics["baseline"]["status"] == "ok"


def test_a_wrong_key_file_is_named(encrypted_splits, tmp_path, local_engine):
    _, splits, _ = encrypted_splits
    with pytest.raises(FileNotFoundError, match="encryption key file .*nope.json does not exist"):
        run_report([splits], tmp_path / "report", Options(decrypt_key_file=tmp_path / "nope.json"), local_engine)
