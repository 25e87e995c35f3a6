"""Filters and a stage of one's own, for examples/custom.toml (and docs/python-api.md).

A filter is a function returning a Polars expression, true for the rows to keep; the decorator
gives the reason its drops carry in rejected/<step>/, the counts and the report. Its keyword
arguments are the options a job's `[[custom]] options = {...}` sets. A stage of one's own is a
`pipeline.Stage` subclass with a per-shard `transform`.
"""

from __future__ import annotations

import polars as pl

import pipeline
from pipeline import REASON, ShardOutput, Stage
from pipeline import Options as StageOptions


@pipeline.filter(reason="code_block")
def no_code_blocks(max_prompts: int = 5) -> pl.Expr:
    """Drop pages that are mostly interactive examples: more than N lines starting with `>>>`."""
    return pl.col("text").str.count_matches(r"(?m)^>>>") <= max_prompts


@pipeline.filter(reason="private_module")
def public_modules() -> pl.Expr:
    """Drop the pages of private modules (a title naming a module that starts with `_`)."""
    return ~pl.col("title").str.contains(r"module _")


class LongestLines(Stage):
    """Keep the documents whose longest line is at most `max_chars` characters (tables and
    minified text are dropped with reason long_line); adds `longest_line` (Int32)."""

    name = "longest_lines"
    summary = "drop documents with over-long lines"
    secondary = ("rejected",)

    class Options(StageOptions):
        max_chars: int = 500
        """Documents with a line longer than this many characters are dropped."""

    def transform(self, frame: pl.LazyFrame, plan: Options) -> ShardOutput:
        longest = pl.col("text").str.split("\n").list.eval(pl.element().str.len_chars()).list.max()
        df = frame.with_columns(longest.cast(pl.Int32).alias("longest_line")).collect()
        too_long = pl.col("longest_line") > plan.max_chars
        return ShardOutput({"main": df.filter(~too_long),
                            "rejected": df.filter(too_long).with_columns(pl.lit("long_line").alias(REASON))})
