"""The one driver (pipeline.stage.StageRun via Stage.run): resume, fit only when some shard is to
do, the plan reaching every shard, the input check before any work, and counts adding up."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset import MANIFEST, PROGRESS, Dataset
from pipeline.errors import InputError, require_columns
from pipeline.stage import REASON, Options, ShardOutput, Stage, StageRun


class LongerThanMean(Stage):
    """Keeps documents longer than the corpus' mean length: `fit` is a real global pass."""

    name = "longer_than_mean"
    secondary = ("rejected",)

    def __init__(self, options=None):
        super().__init__(options)
        self.fits = 0

    def check(self, schema: dict, dataset: Path) -> None:
        require_columns(self.name, dataset, schema, ["text"])

    def fit(self, run: StageRun) -> float:
        self.fits += 1
        lengths = run.map(shard_length, run.shards, [str(s) for s in run.shards])
        return sum(total for total, _ in lengths) / sum(rows for _, rows in lengths)

    def transform(self, frame: pl.LazyFrame, plan: float) -> ShardOutput:
        df = frame.with_columns(pl.col("text").str.len_chars().alias("chars")).collect()
        short = pl.col("chars") <= plan
        return ShardOutput({"main": df.filter(~short), "rejected": df.filter(short).with_columns(pl.lit("short").alias(REASON))},
                           counts={"mean_chars_x100": int(plan * 100)})


def shard_length(shard: Path) -> tuple[int, int]:
    texts = pl.read_parquet(shard, columns=["text"])["text"]
    return int(texts.str.len_chars().sum()), len(texts)


def test_fit_runs_only_when_shards_are_pending_and_resume_gives_the_same_bytes(make_licences, tmp_path, local_engine):
    source = make_licences(tmp_path / "docs", shards=4)
    frame = pl.read_parquet(source)
    mean = frame["text"].str.len_chars().mean()
    stage = LongerThanMean()
    first = stage.run([source], tmp_path / "out", local_engine)
    longer = int((frame["text"].str.len_chars() > mean).sum())
    assert stage.fits == 1 and first.skipped_tasks == 0
    assert (first.rows_in, first.rows_out, first.dropped) == (728, longer, {"short": 728 - longer})
    assert first.details["mean_chars_x100"] == 4 * int(mean * 100)
    shards = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.parquet")}

    again = stage.run([source], tmp_path / "out", local_engine)
    assert stage.fits == 1 and again.skipped_tasks == 4 and again.rows_out == longer

    # one shard's output lost: the fit runs again (its plan is needed), only that shard is redone
    (tmp_path / "out" / "part-00002.parquet").unlink()
    third = stage.run([source], tmp_path / "out", local_engine)
    assert stage.fits == 2 and third.skipped_tasks == 3 and third.rows_out == longer
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.parquet")} == shards
    assert Dataset(tmp_path / "rejected" / "out").rows() == 728 - longer
    assert (tmp_path / "out" / MANIFEST).exists() and (tmp_path / "out" / PROGRESS).is_dir()


def test_other_options_start_over(make_licences, tmp_path, local_engine):
    class WithOption(LongerThanMean):
        class Options(Options):
            note: str = "a"
            """Changes nothing but the fingerprint."""

    source = make_licences(tmp_path / "docs", shards=2)
    stage = WithOption()
    stage.run([source], tmp_path / "out", local_engine)
    other = WithOption(WithOption.Options(note="b"))
    result = other.run([source], tmp_path / "out", local_engine)
    assert other.fits == 1 and result.skipped_tasks == 0


def test_the_input_check_fails_before_any_work(make_licences, tmp_path, local_engine):
    source = make_licences(tmp_path / "docs", shards=2)
    pl.read_parquet(source).rename({"text": "body"}).write_parquet(tmp_path / "body.parquet")
    (tmp_path / "renamed").mkdir()
    (tmp_path / "body.parquet").rename(tmp_path / "renamed" / "part-00000.parquet")
    stage = LongerThanMean()
    with pytest.raises(InputError, match=r"has no column `text` \(found id: String, title: String, body: String\)"):
        stage.run([tmp_path / "renamed"], tmp_path / "out", local_engine)
    assert stage.fits == 0 and not (tmp_path / "out").exists()


def test_a_stage_that_takes_text_refuses_records(tmp_path, local_engine):
    (tmp_path / "records").mkdir()
    pl.DataFrame({"id": ["1"], "kind": ["instruction"], "text": ["q\n\na"]}).write_parquet(
        tmp_path / "records" / "part-00000.parquet")
    with pytest.raises(InputError, match="holds instruction or chat records"):
        LongerThanMean().run([tmp_path / "records"], tmp_path / "out", local_engine)
