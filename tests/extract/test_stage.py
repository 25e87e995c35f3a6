"""The extract stage on raw shards: documents out, drops by reason, counts that add up."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from extract_evaluate import load_aeb

from pipeline.cli import cli
from pipeline.dataset import Dataset, write_shard
from pipeline.extract import Options, extract_shard, run
from pipeline.schema import DOC_SCHEMA, RAW_SCHEMA, rejected_folder

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def raw_row(url, body, *, status=200, content_type="text/html; charset=utf-8", error=None,
            final_url=None, headers=None):
    return {"url": url, "final_url": final_url, "status": status, "content_type": content_type,
            "headers": json.dumps(headers or {}), "body": body, "fetched_at": WHEN,
            "source": "test", "error": error}


def raw_frame(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RAW_SCHEMA)


def special_rows() -> list[dict]:
    good = b"<html><body><p>" + b"A real paragraph of text that says something useful. " * 4 + b"</p></body></html>"
    return [
        raw_row("http://x/error", None, status=None, error="timeout"),
        raw_row("http://x/404", good, status=404),
        raw_row("http://x/pdf", b"%PDF-1.4 ...", content_type="application/pdf"),
        raw_row("http://x/binary", b"\x00\x01\x02" * 100, content_type="text/html"),
        raw_row("http://x/empty", b""),
        raw_row("http://x/no-text", b"<html><head><title>t</title></head><body><nav><a href='/'>x</a></nav></body></html>"),
        raw_row("http://x/sniffed", good, content_type=None),
        raw_row("http://x/redirect", good, final_url="http://x/final"),
    ]


@pytest.fixture(scope="module")
def aeb_pages(shared_data):
    return list(load_aeb(shared_data / "extraction" / "aeb", limit=24))


def test_extract_shard_counts_and_reasons(aeb_pages):
    rows = [raw_row(p.url, p.html, content_type="text/html") for p in aeb_pages] + special_rows()
    out = extract_shard(raw_frame(rows).lazy(), Options())
    docs, rejected = out.frames["main"], out.frames["rejected"]
    assert docs.schema == pl.Schema(DOC_SCHEMA)
    assert docs.height + rejected.height == len(rows)
    reasons = dict(rejected.group_by("reason").len().iter_rows())
    assert reasons == {"fetch_error": 1, "http_status": 1, "not_html": 1, "binary": 1,
                       "empty_body": 1, "empty_text": 1}
    assert docs.height == len(aeb_pages) + 2
    assert docs["id"].str.len_chars().unique().to_list() == [16]
    assert docs["id"].n_unique() == docs.height
    assert docs["label"].null_count() == docs.height
    redirected = docs.filter(pl.col("url") == "http://x/final").row(0, named=True)
    assert json.loads(redirected["meta"])["requested_url"] == "http://x/redirect"
    # the id is the hash of the requested URL (unique per fetched row), the url where the text is
    from pipeline.hashing import doc_id
    expected = pl.select(doc_id(pl.lit("http://x/redirect"))).item()
    assert redirected["id"] == expected
    metas = [json.loads(m) for m in docs["meta"]]
    assert sum("lang" in m for m in metas) > len(aeb_pages) // 2
    assert all(m["encoding"] for m in metas)
    assert set(rejected.columns) == set(RAW_SCHEMA) | {"reason"}


def write_raw(folder: Path, frames: list[pl.DataFrame]) -> Path:
    for i, frame in enumerate(frames):
        write_shard(frame, folder, f"source=test/part-{i:03d}.parquet")
    return folder


def test_stage_on_dask_counts_add_up(tmp_path, aeb_pages, dask_engine):
    half = len(aeb_pages) // 2
    frames = [
        raw_frame([raw_row(p.url, p.html) for p in aeb_pages[:half]] + special_rows()[:4]),
        raw_frame([raw_row(p.url, p.html) for p in aeb_pages[half:]] + special_rows()[4:]),
    ]
    raw = write_raw(tmp_path / "raw", frames)
    result = run([raw], tmp_path / "docs", Options(), dask_engine)
    assert result.rows_in == len(aeb_pages) + 8
    assert result.rows_in == result.rows_out + sum(result.dropped.values())
    assert result.dropped == {"fetch_error": 1, "http_status": 1, "not_html": 1, "binary": 1,
                              "empty_body": 1, "empty_text": 1}
    docs = Dataset(tmp_path / "docs")
    assert docs.rows() == result.rows_out == len(aeb_pages) + 2
    rejected = Dataset(rejected_folder(tmp_path / "docs"))
    assert rejected.rows() == 6
    assert pl.Schema(DOC_SCHEMA).items() <= docs.scan().collect_schema().items()
    # deterministic: the same input gives byte-identical shards
    again = run([raw], tmp_path / "docs2", Options(), dask_engine)
    assert again.rows_out == result.rows_out
    assert [s["sha256"] for s in docs.manifest()["shards"]] == \
        [s["sha256"] for s in Dataset(tmp_path / "docs2").manifest()["shards"]]


def test_cli_extract(tmp_path, aeb_pages):
    raw = write_raw(tmp_path / "raw", [raw_frame([raw_row(p.url, p.html) for p in aeb_pages[:4]])])
    result = CliRunner().invoke(cli, ["extract", "--input", str(raw), "--output", str(tmp_path / "docs"),
                                      "--workers", "0", "--min-chars", "200"])
    assert result.exit_code == 0, result.output
    assert "extract" in result.output and "out=4" in result.output
    bad = CliRunner().invoke(cli, ["extract", "--input", str(raw), "--output", str(tmp_path / "d2"),
                                   "--workers", "0", "--min-chars", "0"])
    assert bad.exit_code != 0 and "min_chars" in bad.output


def test_demo_site_pydoc_pages_give_documentation_text(tmp_path, local_engine):
    from pipeline.demo_site import DemoSite

    rows = []
    with DemoSite(modules=400) as site:
        for name in ("argparse", "json", "textwrap", "shlex"):
            with urllib.request.urlopen(f"{site.url}/{name}.html", timeout=60) as response:
                rows.append(raw_row(f"{site.url}/{name}.html", response.read(),
                                    content_type=response.headers["Content-Type"]))
    raw = write_raw(tmp_path / "raw", [raw_frame(rows)])
    result = run([raw], tmp_path / "docs", Options(), local_engine)
    assert result.rows_out == 4
    docs = {r["url"].rsplit("/", 1)[1]: r for r in Dataset(tmp_path / "docs").scan().collect().iter_rows(named=True)}
    assert "ArgumentParser" in docs["argparse.html"]["text"]
    assert "JSON (JavaScript Object Notation)" in docs["json.html"]["text"]
    assert "dedent(text)" in docs["textwrap.html"]["text"]
    for doc in docs.values():
        assert len(doc["text"]) > 1000
        assert doc["title"].startswith("Python:")
