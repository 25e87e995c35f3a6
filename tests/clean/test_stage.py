"""The clean stage end to end: shards in, clean/ and rejected/clean/ out, counts that add up,
through the Dask engine, the in-process engine and the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.clean import Options, clean_shard, run
from pipeline.cli import cli
from pipeline.dataset import Dataset, write_shard
from pipeline.hashing import doc_id
from pipeline.schema import DOC_SCHEMA, rejected_folder


def docs_frame(texts: list[str], source: str, extra: dict | None = None) -> pl.DataFrame:
    n = len(texts)
    return pl.DataFrame({
        "id": [f"{source}:{i}" for i in range(n)], "source": [source] * n, "url": [None] * n,
        "fetched_at": [datetime(2026, 1, 1, tzinfo=UTC)] * n, "title": [None] * n, "text": texts,
        "label": [None] * n, "meta": [json.dumps(extra or {})] * n,
    }, schema=DOC_SCHEMA).with_columns(doc_id(pl.col("id")).alias("id"))


@pytest.fixture()
def docs_dataset(tmp_path, web_docs, sms):
    """A docs/ dataset of 3 shards: real web pages (2 shards) and real SMS with PII."""
    root = tmp_path / "docs"
    pages = web_docs["text"].head(400).to_list()
    write_shard(docs_frame(pages[:200], "web"), root, "part-0.parquet")
    write_shard(docs_frame(pages[200:], "web"), root, "part-1.parquet")
    letter = ("The committee met on Tuesday to review the budget and to discuss the plans that have "
              "been made with the city. Members of the public were invited to speak. ") * 4
    texts = sms["text"].head(300).to_list() + [letter + "Contact me at jane.doe@example.com or 555-123-4567."]
    write_shard(docs_frame(texts, "sms"), root, "part-2.parquet")
    return root


def check_result(result, out):
    kept = pl.read_parquet(out / "**/*.parquet")
    rejected = pl.read_parquet(rejected_folder(out) / "**/*.parquet")
    assert result.rows_in == 701
    assert result.rows_out == kept.height
    assert result.rows_in == result.rows_out + sum(result.dropped.values())
    assert rejected.group_by("reason").len().sort("reason").rows() == sorted(result.dropped.items())
    assert kept.columns == list(DOC_SCHEMA)  # same columns, no quality columns by default
    assert set(kept["id"]) | set(rejected["id"]) == set(pl.read_parquet(out.parent / "docs" / "*.parquet")["id"])
    assert result.details["pii:email"] >= 20 and result.details["pii:phone"] >= 20
    # the long PII message survives (it has enough words) and is masked
    masked = kept.filter(pl.col("source") == "sms")["text"].to_list()
    assert any(t.endswith("Contact me at <EMAIL> or <PHONE>.") for t in masked)
    assert not kept["text"].str.contains("jane.doe@example.com").any()
    return kept, rejected


def test_stage_through_dask(docs_dataset, dask_engine):
    out = docs_dataset.parent / "clean"
    result = run([docs_dataset], out, Options(), dask_engine)
    kept, rejected = check_result(result, out)
    assert result.dropped["gopher_min_words"] >= 290  # SMS are short
    assert 150 < kept.height < 400
    assert Dataset(out).manifest()["rows"] == kept.height
    # a re-run resumes every shard
    again = run([docs_dataset], out, Options(), dask_engine)
    assert again.skipped_tasks == 3 and again.rows_out == result.rows_out


def test_stage_in_process_is_deterministic(docs_dataset, local_engine, tmp_path):
    first = run([docs_dataset], tmp_path / "a" / "clean", Options(quality_columns=True), local_engine)
    second = run([docs_dataset], tmp_path / "b" / "clean", Options(quality_columns=True), local_engine)
    a = Dataset(tmp_path / "a" / "clean").manifest()
    b = Dataset(tmp_path / "b" / "clean").manifest()
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert first.dropped == second.dropped
    kept = pl.read_parquet(tmp_path / "a" / "clean" / "*.parquet")
    assert {"quality_words", "quality_sentences"} <= set(kept.columns)
    assert kept["quality_words"].min() >= 50


def test_global_mean_fill_through_stage(tmp_path, local_engine):
    root = tmp_path / "docs"
    write_shard(docs_frame(["a"] * 3, "csv").with_columns(pl.Series("score", ["1", "NA", "2"])), root, "p0.parquet")
    write_shard(docs_frame(["b"] * 3, "csv").with_columns(pl.Series("score", ["9", "oops", None])), root, "p1.parquet")
    options = Options(min_words=None, min_sentences=None, min_mean_word_length=None, min_stop_words=None,
                      min_punct_lines_ratio=None,
                      columns=[{"column": "score", "dtype": "float", "missing": "mean"}])
    result = run([root], tmp_path / "clean", options, local_engine)
    kept = pl.read_parquet(tmp_path / "clean" / "*.parquet").sort("text")
    assert kept["score"].to_list() == [1.0, 4.0, 2.0, 9.0, 4.0]  # mean of 1, 2, 9 over both shards
    assert result.dropped == {"type:score": 1}
    rejected = pl.read_parquet(rejected_folder(tmp_path / "clean") / "**/*.parquet")
    assert rejected.select("score", "reason").rows() == [("oops", "type:score")]  # the input value, not null


def test_transform_is_pure(web_docs):
    frame = docs_frame(web_docs["text"].head(20).to_list(), "web").lazy()
    one, two = clean_shard(frame, Options()), clean_shard(frame, Options())
    assert one.frames["main"].equals(two.frames["main"]) and one.counts == two.counts


def test_cli_flags(docs_dataset, tmp_path):
    out = tmp_path / "cli" / "clean"
    args = ["clean", "--input", str(docs_dataset), "--output", str(out), "--workers", "0",
            "--min-words", "5", "--no-mask-phone", "--max-symbol-ratio", "0.2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "clean" in result.output and "dropped" in result.output
    kept = pl.read_parquet(out / "*.parquet")
    assert kept["text"].str.contains("555-123-4567", literal=True).any()  # phones left alone
    assert Dataset(out).manifest()["options"]["min_words"] == 5
    bad = CliRunner().invoke(cli, ["clean", "--input", str(docs_dataset), "--output", str(out), "--min-words", "-3"])
    assert bad.exit_code != 0 and "min_words" in bad.output


def test_language_filter():
    texts = ["The committee met on Tuesday to review the budget and to discuss the plans of the city.",
             "Der Ausschuss traf sich am Dienstag, um den Haushalt zu prüfen und die Pläne der Stadt zu besprechen.",
             "Le comité s'est réuni mardi pour examiner le budget et discuter des projets de la ville.", ""]
    off = {"min_words": None, "min_sentences": None, "min_punct_lines_ratio": None, "min_stop_words": None,
           "max_top_2gram_char_ratio": None, "max_top_3gram_char_ratio": None, "max_top_4gram_char_ratio": None}
    out = clean_shard(pl.LazyFrame({"text": texts}), Options(languages=["en", "fr"], **off))
    assert out.frames["main"]["language"].to_list() == ["en", "fr"]
    assert out.frames["rejected"].select("language", "reason").rows() == [("de", "language"), (None, "empty")]


def test_text_batches_do_not_change_the_result(web_docs):
    """A shard is cleaned in batches of at most batch_bytes of text (memory); the rows kept, the
    cleaned text, the reasons and the PII counts are those of one batch."""
    frame = docs_frame(web_docs["text"].head(120).to_list(), "web")
    assert frame["text"].str.len_bytes().sum() > 10 * 20_000  # so the small setting cuts it
    whole = clean_shard(frame.lazy(), Options())
    cut = clean_shard(frame.lazy(), Options(batch_bytes=20_000))
    for name in ("main", "rejected"):
        assert cut.frames[name].equals(whole.frames[name]), name
    assert cut.counts == whole.counts
    assert whole.frames["main"].height > 0 and whole.frames["rejected"].height > 0
