"""fetch from the command line and from a job file (the demo's crawl of the local pydoc site)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.dataset import Dataset
from pipeline.runner import run_job

REPO = Path(__file__).resolve().parents[2]


def pipeline_cli(*args: str):
    """The real command, in-process (click's runner): .exit_code, .stdout, .stderr."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    return CliRunner().invoke(cli, list(args), prog_name="pipeline")


def test_each_source_kind_is_a_subcommand_with_its_options():
    crawl = pipeline_cli("fetch", "crawl", "--help")
    assert crawl.exit_code == 0
    for flag in ("--seeds", "--max-pages", "--max-depth", "--scope [same-host|same-domain|prefix]",
                 "--concurrency", "--per-host", "--delay", "--timeout", "--max-bytes", "--user-agent",
                 "--allow-private / --no-allow-private", "--sitemaps / --no-sitemaps", "--output"):
        assert flag in crawl.stdout, flag
    assert "--kind" not in crawl.stdout
    files = pipeline_cli("fetch", "files", "--help").stdout
    assert "--glob" in files and "--id-field" in files and "--text-field" in files
    assert "--dsn" in pipeline_cli("fetch", "sql", "--help").stdout
    assert "--paging [page|offset|cursor|none]" in pipeline_cli("fetch", "api", "--help").stdout


def test_bad_values_fail_with_the_key_named(tmp_path):
    out = pipeline_cli("fetch", "crawl", "--seeds", "ftp://example.org/", "--output", str(tmp_path / "x"))
    assert out.exit_code == 2 and "seeds" in out.stderr and "not http(s)" in out.stderr
    out = pipeline_cli("fetch", "crawl", "--output", str(tmp_path / "x"))
    assert out.exit_code == 2 and "at least one seed" in out.stderr


def test_job_file_crawls_the_demo_site(tmp_path, monkeypatch):
    # the job model is built from every stage's options; keep this test about fetch alone
    monkeypatch.setattr("pipeline.config.ORDER", ["fetch"])
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "fetch-demo"
output = "{tmp_path / 'out'}"
stages = ["fetch"]

[engine]
workers = 0

[demo_site]
modules = 12

[[fetch.sources]]
kind = "crawl"
seeds = ["{{demo_site}}/"]
allow_private = true
max_pages = 40
""")
    results = run_job(job, echo=lambda *a, **k: None)
    assert results[0].stage == "fetch" and results[0].rows_out > 12
    frame = Dataset(tmp_path / "out" / "raw").scan().collect()
    ok = frame.filter(pl.col("error").is_null())
    assert ok.height >= 13  # the index and its 12 module pages at least
    assert ok["url"].n_unique() == ok.height
    assert all(b"<html" in body.lower() or b"<!doctype" in body.lower() for body in ok["body"])
