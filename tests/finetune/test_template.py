"""Templates: output records, null placeholders to rejected, a missing column is a clear error."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.template import Options, TemplateError, parse_template, template_frame, template_shard


@pytest.fixture()
def labelled() -> pl.DataFrame:
    return pl.DataFrame({
        "id": ["a", "b", "c", "d"], "source": ["s"] * 4,
        "text": ["Great film.", "Dull {plot}.", None, "Fine."],
        "label": ["fresh", "rotten", "fresh", " "],
        "score": [9, 2, 7, 5],
    })


def test_instruction_records_from_templates(labelled):
    options = Options(prompt="Classify {{sentiment}}: {text} (score {score})", response="{label}", system="Reviewer {id}")
    out = template_shard(labelled.lazy(), options)
    main, rejected = out.frames["main"], out.frames["rejected"]
    assert main["id"].to_list() == ["a", "b"]
    assert main["kind"].to_list() == ["instruction", "instruction"]
    assert main["prompt"].to_list() == ["Classify {sentiment}: Great film. (score 9)", "Classify {sentiment}: Dull {plot}. (score 2)"]
    assert main["response"].to_list() == ["fresh", "rotten"]
    assert main["system"].to_list() == ["Reviewer a", "Reviewer b"]
    assert main["text"][0] == "Reviewer a\n\nClassify {sentiment}: Great film. (score 9)\n\nfresh"
    assert dict(zip(rejected["id"], rejected["reason"], strict=True)) == {"c": "template_null:text", "d": "template_empty:response"}
    assert rejected["text"][0] is None  # rejected rows keep their input values


def test_chat_records_and_column_selection(labelled):
    records, _ = template_frame(labelled.lazy(), Options(kind="chat", columns=["id", "label"]))
    out = records.collect()
    assert out.columns == ["id", "label", "text", "kind", "system", "prompt", "response", "messages"]
    assert out["prompt"].null_count() == out.height  # the other kind's columns are null
    assert out["messages"][0].to_list() == [{"role": "user", "content": "Great film."}, {"role": "assistant", "content": "fresh"}]
    with_system, _ = template_frame(labelled.lazy(), Options(kind="chat", system="Be fair.", columns=[]))
    assert [m["role"] for m in with_system.collect()["messages"][0]] == ["system", "user", "assistant"]


def test_a_missing_placeholder_column_is_an_error_naming_it(labelled):
    with pytest.raises(TemplateError, match=r"response placeholder \{category\}: .* has no column `category`"):
        template_frame(labelled.lazy(), Options(response="{category}"))
    with pytest.raises(TemplateError, match="columns: .* no column `nope`"):
        template_frame(labelled.lazy(), Options(columns=["id", "nope"]))


def test_template_syntax_errors_are_option_errors():
    assert parse_template("a {x} {{y}}") == [("text", "a "), ("column", "x"), ("text", " "), ("text", "{"), ("text", "y"), ("text", "}")]
    for bad in ("{x", "x}", "{}"):
        with pytest.raises(ValueError, match="template"):
            Options(prompt=bad)


def test_the_command_line_names_a_missing_placeholder_column_and_exits_3(tmp_path, labelled):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "in").mkdir()
    labelled.write_parquet(tmp_path / "in" / "part-00000.parquet")
    done = subprocess.run([sys.executable, "-m", "pipeline", "template", "--input", str(tmp_path / "in"),
                           "--output", str(tmp_path / "out"), "--response", "{category}", "--workers", "0"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 3, done.stderr
    assert "placeholder {category}" in done.stderr and "no column `category`" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_template_stage_sends_unfillable_rows_to_rejected(tmp_path, labelled, local_engine):
    from pipeline.template import run

    (tmp_path / "labelled").mkdir()
    labelled.write_parquet(tmp_path / "labelled" / "part-00000.parquet")
    result = run([tmp_path / "labelled"], tmp_path / "records", Options(prompt="Classify: {text}"), local_engine)
    assert (result.rows_in, result.rows_out) == (4, 2)
    assert result.dropped == {"template_null:text": 1, "template_empty:response": 1}
    rejected = pl.read_parquet(tmp_path / "rejected" / "records" / "part-00000.parquet")
    assert sorted(rejected["id"]) == ["c", "d"]
