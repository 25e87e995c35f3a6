"""The command line teaches: every stage has --help with its options and defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.stages import ORDER


def test_top_level_help_lists_every_stage():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ["run", *ORDER]:
        assert f"  {name}" in result.output
    assert "pipeline run jobs/demo.toml" in result.output


@pytest.mark.parametrize("stage", [s for s in ORDER if s != "fetch"])
def test_stage_help_lists_options_with_defaults(stage):
    result = CliRunner().invoke(cli, [stage, "--help"])
    assert result.exit_code == 0, result.output
    assert "--input" in result.output and "--output" in result.output
    assert "--workers" in result.output and "--scheduler" in result.output
    assert "[default:" in result.output


def test_fetch_has_a_subcommand_per_source():
    result = CliRunner().invoke(cli, ["fetch", "--help"])
    assert result.exit_code == 0
    for kind in ("crawl", "api", "sql", "files"):
        assert kind in result.output
    crawl = CliRunner().invoke(cli, ["fetch", "crawl", "--help"])
    assert "--seed TEXT" in crawl.output or "--seed " in crawl.output and "--max-pages" in crawl.output


def test_python_dash_m_works():
    done = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "fetch" in done.stdout


def test_missing_input_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(cli, ["clean", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "--workers", "0"])
    assert result.exit_code == 3  # bad input (pipeline.errors.InputError)
    assert "nope" in result.output and "does not exist" in result.output
