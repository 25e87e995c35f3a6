"""Decontaminate: drop (or flag) train rows that share an n-gram with an eval set or our val/test.

Reads the split stage's output (splits/train, val, test) and writes the same layout: the same
relative shard paths, every column kept. Only rows whose `split` is "train" (every row, when the
input has no `split` column) are checked; val and test rows pass through unchanged. A train row
is contaminated when one of its texts (text rows: `text`; instruction rows: `system`, `prompt`,
`response`; chat rows: every turn's `content`) shares a normalised word n-gram (13 by default)
with an eval set's named fields, or with any of our own val/test rows' texts. A text of fewer
than n tokens matches only a text with exactly its tokens (whole-text rule).

Global fit: each eval set becomes a sorted uint64 hash set on disk (DECONTAMINATED/_eval/NAME.npy,
built on the workers, see `evalsets`), then every input shard is streamed on the workers, which
memory-map the sets and look up all windows of a batch at once (`np.searchsorted`).

`mode = "drop"`: contaminated rows go to rejected/decontaminated/ with `reason`
("contaminated:NAME", NAME the first set that matched, eval sets in job order, then val, test),
`contaminated_by` (every set that matched) and `matched_ngram` (the first matching window of
NAME, normalised). `mode = "flag"`: every row is kept; train rows get `contaminated` (bool) and
`contaminated_by` (list), val/test rows null in both (not checked). Counts per set in the result
and the manifest. Design and normalisation: docs/stages/decontaminate.md.

\b
Example:
  pipeline decontaminate --input out/splits --output out/decontaminated \\
      --eval-set gsm8k_test=data/instruct/gsm8k_test.jsonl.gz@question
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator, model_validator

from pipeline.dataset import TaskRecord, input_fingerprint, write_json_atomic
from pipeline.decontaminate.evalsets import build_set, eval_files, record_texts
from pipeline.decontaminate.ngrams import batches, contains, windows
from pipeline.engine import Engine
from pipeline.records import KINDS
from pipeline.stage import REASON, ShardOutput, Stage, StageResult, StageRun
from pipeline.stage import Options as StageOptions

STAGE = "decontaminate"
OWN_SPLITS = ("val", "test")
SETS_FOLDER = "_eval"
SETS_STATE = "sets.json"  # the sets' fingerprint and counts, beside the .npy files


class EvalSet(StageOptions):
    """One eval set (benchmark) to check train against."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Its name in reasons, counts and the report (letters, digits, `_ . -`; not val or test)."""
    path: str
    """A file or glob (JSONL, JSON array, Parquet, CSV/TSV, optionally .gz/.bz2) or a dataset folder."""
    fields: list[str] = ["text"]
    """Fields whose texts are checked, each on its own; a chat field (list of {role, content})
    counts every turn."""

    @field_validator("name")
    @classmethod
    def _not_own(cls, value: str) -> str:
        if value in OWN_SPLITS:
            raise ValueError(f"{value!r} is the name of our own split (checked with own_splits)")
        return value


def parse_eval_set(spec: str) -> EvalSet:
    """`NAME=PATH[@FIELD,FIELD]` (the command-line form) → EvalSet."""
    name, sep, rest = spec.partition("=")
    if not sep or not rest:
        raise ValueError(f"eval_set: expected NAME=PATH[@FIELD,...], got {spec!r}")
    path, at, fields = rest.rpartition("@") if "@" in rest else (rest, "", "")
    chosen = [f.strip() for f in fields.split(",") if f.strip()] if at else ["text"]
    return EvalSet(name=name.strip(), path=path, fields=chosen)


class Options(StageOptions):
    eval_sets: list[EvalSet] = []
    """Eval sets to check train against (job file: [[decontaminate.eval_sets]] tables with
    name, path, fields)."""
    eval_set: list[str] = []
    """More eval sets as NAME=PATH[@FIELD,FIELD] (default field: text), e.g.
    gsm8k_test=data/instruct/gsm8k_test.jsonl.gz@question."""
    ngram: int = Field(13, ge=1, le=64)
    """Words per n-gram; a row sharing one n-gram with an eval text is contaminated (13 as in
    GPT-3's decontamination; smaller catches more, and more false matches)."""
    numbers: Literal["keep", "zero"] = "keep"
    """keep: numbers are tokens like words; zero: every number counts as 0 (as datatrove does),
    so texts that differ only in their numbers match (a GSM8K problem with new numbers)."""
    own_splits: bool = True
    """Also check train against our own val and test rows (sets named val and test)."""
    mode: Literal["drop", "flag"] = "drop"
    """drop: contaminated train rows go to rejected/ with the reason; flag: kept, with columns
    `contaminated` and `contaminated_by`."""

    @model_validator(mode="after")
    def _unique_names(self) -> Options:
        names = [s.name for s in self.all_eval_sets()]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"eval set names must be unique, repeated: {repeated}")
        if not names and not self.own_splits:
            raise ValueError("nothing to check against: give eval_sets or keep own_splits on")
        return self

    def all_eval_sets(self) -> list[EvalSet]:
        return [*self.eval_sets, *(parse_eval_set(s) for s in self.eval_set)]


@dataclass
class ShardOptions:
    """What a worker needs for one shard: n, mode and the sets' .npy paths in priority order."""

    ngram: int
    mode: str
    sets: list[tuple[str, str]]
    zero_numbers: bool = False


def contamination(frame: pl.DataFrame, options: ShardOptions) -> pl.DataFrame:
    """Per row of `frame` (all treated as train): `_by` (sets matched, priority order, empty if
    none) and `_ngram` (the first matching window of the first set, null if none)."""
    rows, texts = record_texts(frame)
    sets = [np.load(path, mmap_mode="r") for _, path in options.sets]
    found = []
    offsets = texts.str.len_bytes().fill_null(0).to_numpy()
    for a, b in batches(offsets):
        w = windows(texts.slice(a, b - a), options.ngram, options.zero_numbers)
        window_rows = rows[a + w.unit]
        for index, hashes in enumerate(sets):
            hit = np.flatnonzero(contains(hashes, w.hashes))
            if not len(hit):
                continue
            # the first matching window of each row for this set (windows are in row order)
            hit_rows = window_rows[hit]
            first = hit[np.concatenate([[True], hit_rows[1:] != hit_rows[:-1]])]
            found.append(pl.DataFrame({"_row": window_rows[first], "_set": np.full(len(first), index),
                                       "_ngram": w.text_of(first)},
                                      schema={"_row": pl.Int64, "_set": pl.Int64, "_ngram": pl.String}))
    names = pl.Series([name for name, _ in options.sets], dtype=pl.String)
    per_row = pl.DataFrame(schema={"_row": pl.Int64, "_by": pl.List(pl.String), "_ngram": pl.String})
    if found:
        per_row = (pl.concat(found).unique(["_row", "_set"], keep="first", maintain_order=True)
                   .sort("_row", "_set")
                   .group_by("_row", maintain_order=True)
                   .agg(pl.col("_set").alias("_by"), pl.col("_ngram").first())
                   .with_columns(pl.col("_by").list.eval(pl.element().replace_strict(
                       list(range(len(names))), names.to_list(), return_dtype=pl.String))))
    base = pl.DataFrame({"_row": np.arange(frame.height, dtype=np.int64)})
    return (base.join(per_row, on="_row", how="left", maintain_order="left")
            .with_columns(pl.col("_by").fill_null(pl.lit([], dtype=pl.List(pl.String))))
            .drop("_row"))


def decontaminate_shard(frame: pl.LazyFrame, options: ShardOptions) -> ShardOutput:
    """One shard: check its train rows, keep the rest unchanged (see the module docstring)."""
    data = frame.collect()
    if "split" in data.columns:
        train_index = np.flatnonzero((data["split"] == "train").fill_null(False).to_numpy())
    else:
        train_index = np.arange(data.height)
    checked = pl.DataFrame(schema={"_i": pl.Int64, "_by": pl.List(pl.String), "_ngram": pl.String})
    if len(train_index):
        checked = contamination(data[train_index], options).with_columns(_i=pl.Series(train_index))
    # val/test rows get nulls: not checked
    marked = (data.with_row_index("_i").with_columns(pl.col("_i").cast(pl.Int64))
              .join(checked, on="_i", how="left", maintain_order="left").drop("_i"))
    bad = pl.col("_by").list.len().fill_null(0) > 0
    contaminated = marked.select(bad)["_by"]
    counts = {"train_rows_checked": len(train_index), "contaminated_rows": int(contaminated.sum())}
    matched = {name: int(marked.select(pl.col("_by").list.contains(name).fill_null(False).sum()).item())
               for name, _ in options.sets}
    if options.mode == "flag":
        main = marked.with_columns(
            pl.when(pl.col("_by").is_null()).then(None).otherwise(bad).alias("contaminated"),
            pl.col("_by").alias("contaminated_by"),
        ).drop("_by", "_ngram")
        return ShardOutput({"main": main}, counts, {"matched": matched})
    rejected = marked.filter(bad).select(
        pl.all().exclude("_by", "_ngram"),
        pl.concat_str(pl.lit("contaminated:"), pl.col("_by").list.first()).alias(REASON),
        pl.col("_by").alias("contaminated_by"),
        pl.col("_ngram").alias("matched_ngram"),
    )
    return ShardOutput({"main": data.filter(~contaminated), "rejected": rejected}, counts, {"matched": matched})


def _split_of(relpath: str) -> str | None:
    first = Path(relpath).parts[0]
    return first if first in ("train", *OWN_SPLITS) else None


class Decontaminate(Stage):
    """See the module docstring."""

    name = STAGE
    Options = Options
    kinds = KINDS
    secondary = ("rejected",)

    def sources(self) -> dict[str, list[Path]]:
        """The files of every eval set (a missing or unreadable set fails here, before any work)."""
        return {s.name: eval_files(s.name, s.path) for s in self.options.all_eval_sets()}

    def fingerprint(self, inputs: list[Path]) -> dict[str, Any]:
        """The options and the eval files (path, size, modification time)."""
        files = [p for found in self.sources().values() for p in found]
        return {**self.options.fingerprint_dict(), "eval_files": input_fingerprint(files)}

    def plan(self, run: StageRun) -> list[tuple[str, list[Path], list[str] | None]]:
        """(set name, its files or shards, its fields; None: a record's own texts) in priority order."""
        sources = self.sources()
        plan: list[tuple[str, list[Path], list[str] | None]] = [
            (s.name, sources[s.name], s.fields) for s in self.options.all_eval_sets()]
        if self.options.own_splits:
            for split in OWN_SPLITS:
                own = [t.shard for t in run.tasks if _split_of(t.relpath) == split]
                if own:
                    plan.append((split, own, None))
        return plan

    def fit(self, run: StageRun) -> ShardOptions:
        """The global fit: one sorted hash set per eval set on disk, reused by a resumed run."""
        folder = run.output / SETS_FOLDER
        plan = self.plan(run)
        state = _read_json(folder / SETS_STATE)
        if state.get("fingerprint") != run.store.fingerprint:
            state = {"fingerprint": run.store.fingerprint, "sets": {}}
            for name, files, fields in plan:
                state["sets"][name] = build_set(run.engine, name, files, fields, self.options.ngram, folder,
                                                self.options.numbers == "zero")
            write_json_atomic(folder / SETS_STATE, state)
        return ShardOptions(self.options.ngram, self.options.mode,
                            [(name, str(folder / f"{name}.npy")) for name, _, _ in plan],
                            self.options.numbers == "zero")

    def transform(self, frame: pl.LazyFrame, plan: ShardOptions) -> ShardOutput:
        return decontaminate_shard(frame, plan)

    def details(self, run: StageRun, records: list[TaskRecord]) -> dict[str, Any]:
        """Per set: its size and the train rows that matched it."""
        sets = _read_json(run.output / SETS_FOLDER / SETS_STATE).get("sets", {})
        benchmarks = {name: {**sets.get(name, {}), "contaminated_train_rows": 0} for name, _, _ in self.plan(run)}
        for record in records:
            for name, n in record.extra.get("matched", {}).items():
                benchmarks[name]["contaminated_train_rows"] += int(n)
        return {"mode": self.options.mode, "ngram": self.options.ngram, "benchmarks": benchmarks}


def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    """Build the eval sets' hash sets, then check every train row shard by shard."""
    return Decontaminate(options).run(inputs, output, engine, fresh=fresh)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}
