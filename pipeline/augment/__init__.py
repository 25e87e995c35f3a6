"""Augment rare classes in train only: new rows from existing ones by EDA word operations.

Reads the output of `pipeline split` (train/, val/, test/ shards with a `split` column) and writes
the same shards, every row with `augmented` (false) and `parent_id` (null), plus, in train shards
only, new rows made from train rows of the rare classes: synonym replacement and random insertion
(neighbours from the corpus's own Word2Vec model, the one `pipeline features --word2vec` saved),
random swap and random deletion (EDA, Wei & Zou 2019; pipeline/augment/eda.py). A new row copies
its parent's columns (split, group, label, ...) except `id` (`<parent id>-aug<k>`), the text, and
the vector columns (null: they described the parent's text), so it stays in its parent's split
and near-duplicate group. Each class below --target train rows (default: the largest class) gets
up to --target - rows new rows, at most --max-per-parent per parent; val and test pass unchanged.
A copy identical to its parent or to a sibling is not kept (counted as `unchanged`). The manifest
says what was generated per class and operation. Seeded: the same input and seed give the same
bytes. Guide: docs/labelling.md#augmentation.

\b
Example:
  pipeline augment --input out/splits --output out/augmented --classes plot --max-per-parent 4
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field, model_validator

from pipeline.errors import JobError, require_columns
from pipeline.features import vectors
from pipeline.hashing import xxhash64
from pipeline.stage import Options as StageOptions
from pipeline.stage import ShardOutput, ShardTask, Stage, StageRun, TaskRecord

from . import eda

W2V_KV = "word2vec.kv"


class Options(StageOptions):
    label_column: str = "label"
    """Column holding each row's class."""
    split_column: str = "split"
    """Column saying train / val / test (`pipeline split` writes it); only train rows are parents."""
    text_column: str = "text"
    """Column whose words the operations change."""
    classes: list[str] = []
    """Classes to augment (default: every train class with fewer rows than --target)."""
    target: int | None = Field(None, ge=1)
    """Train rows per class to reach (default: the largest train class's count)."""
    max_per_parent: int = Field(4, ge=1, le=32)
    """At most this many new rows from one parent (EDA suggests 4 for large sets, 16 for small ones)."""
    ops: list[Literal["synonym", "insert", "swap", "delete"]] = list(eda.OPS)
    """Operations to draw from (one per new row, drawn with the seed)."""
    alpha: float = Field(0.1, gt=0.0, le=0.5)
    """Share of a text's words an operation changes (at least one)."""
    word2vec_model: str | None = None
    """Word2Vec vectors for synonyms (default: features/_models/word2vec.kv beside the input's
    folder, i.e. what `pipeline features --word2vec` wrote in the same job)."""
    neighbours: int = Field(5, ge=1, le=50)
    """Nearest Word2Vec neighbours a word may be replaced by."""
    min_similarity: float = Field(0.5, ge=-1.0, le=1.0)
    """Cosine a neighbour needs to count as a synonym."""
    seed: int = 42
    """Seed of every draw (operations, positions, words)."""

    @model_validator(mode="after")
    def _ops_given(self) -> Options:
        if not self.ops:
            raise ValueError("ops: give at least one of synonym, insert, swap, delete")
        return self


@dataclass
class Plan:
    options: Options
    quotas: dict[int, dict[str, int]] = field(default_factory=dict)  # shard index → class → new rows
    keyed_vectors: str | None = None
    shard_quota: dict[str, int] = field(default_factory=dict)


def parent_rank(seed: int, id_col: str = "id") -> pl.Expr:
    """The seeded order of parents inside a class (by hash of the id, so sharding does not matter)."""
    return xxhash64(pl.concat_str(pl.col(id_col).cast(pl.String), pl.lit(f":parent:{seed}")))


@dataclass
class CountTask:
    shard: Path
    options: Options


def count_train(task: CountTask) -> dict[str, int]:
    """Worker: train rows per class in one shard."""
    o = task.options
    frame = pl.read_parquet(task.shard, columns=[o.label_column, o.split_column])
    train = frame.filter(pl.col(o.split_column) == "train")
    return {str(c): n for c, n in train.group_by(o.label_column).len().iter_rows() if c is not None}


def needs(totals: dict[str, int], options: Options) -> dict[str, int]:
    """New rows per class: up to the target, at most max_per_parent per parent."""
    if not totals:
        return {}
    target = options.target or max(totals.values())
    chosen = options.classes or [c for c, n in totals.items() if n < target]
    missing = [c for c in chosen if c not in totals]
    if missing:
        raise JobError(f"augment: classes {missing} have no train rows (train has {sorted(totals)})")
    return {c: max(0, min(target - totals[c], options.max_per_parent * totals[c])) for c in sorted(chosen)}


def share_out(need: dict[str, int], per_shard: list[dict[str, int]]) -> dict[int, dict[str, int]]:
    """Each shard's share of every class's new rows, proportional to its parents, exact in total
    (largest remainder, ties to the earlier shard)."""
    quotas: dict[int, dict[str, int]] = {i: {} for i in range(len(per_shard))}
    for c, wanted in need.items():
        have = [counts.get(c, 0) for counts in per_shard]
        total = sum(have)
        if not wanted or not total:
            continue
        exact = [wanted * h / total for h in have]
        base = [int(e) for e in exact]
        order = sorted(range(len(have)), key=lambda i: (-(exact[i] - base[i]), i))
        for i in order[:wanted - sum(base)]:
            base[i] += 1
        for i, n in enumerate(base):
            if n:
                quotas[i][c] = n
    return quotas


def augment_frame(df: pl.DataFrame, options: Options, quota: dict[str, int],
                  keyed_vectors=None) -> tuple[pl.DataFrame, dict[str, int]]:
    """The shard's rows (marked) plus its new rows; counts `generated:<class>:<op>` and `unchanged`."""
    o = options
    marked = df.with_columns(augmented=pl.lit(False), parent_id=pl.lit(None, pl.String))
    if not quota:
        return marked, {}
    parents = (df.filter((pl.col(o.split_column) == "train")
                         & pl.col(o.label_column).cast(pl.String).is_in(list(quota)))
               .with_columns(_class=pl.col(o.label_column).cast(pl.String), _rank=parent_rank(o.seed))
               .sort("_class", "_rank", "id")
               .with_columns(_i=pl.int_range(pl.len()).over("_class"), _n=pl.len().over("_class"),
                             _q=pl.col("_class").replace_strict(quota, return_dtype=pl.Int64)))
    parents = parents.with_columns(
        _copies=(pl.col("_q") // pl.col("_n") + (pl.col("_i") < pl.col("_q") % pl.col("_n")).cast(pl.Int64))
        .clip(0, o.max_per_parent))
    parents = parents.filter(pl.col("_copies") > 0)
    copies = eda.plan_copies(parents, list(o.ops), o.seed)
    vocabulary, synonyms_of = [], None
    if keyed_vectors is not None:
        vocabulary = keyed_vectors.index_to_key
        def synonyms_of(words: list[str]) -> pl.DataFrame:
            return eda.synonym_table(words, keyed_vectors, o.neighbours, o.min_similarity)
    copies = copies.with_columns(_new_text=eda.augment_texts(copies, o.text_column, o.alpha, o.seed,
                                                             vocabulary, synonyms_of))
    fresh = (pl.col("_new_text") != pl.col(o.text_column).fill_null("")) & (pl.col("_new_text") != "")
    copies = copies.filter(fresh).unique(["id", "_new_text"], keep="first", maintain_order=True)
    generated = {f"generated:{c}:{op}": n for c, op, n in copies.group_by("_class", "_op").len().sort("_class", "_op").iter_rows()}
    planned = int(parents["_copies"].sum())
    vector_columns = [c for c in vectors.read_columns(vectors.available(dict(df.schema))) if c in df.columns]
    new_rows = copies.with_columns(
        pl.col("_new_text").alias(o.text_column),
        pl.col("id").cast(pl.String).alias("parent_id"),
        pl.col("_aug_id").alias("id"),
        augmented=pl.lit(True),
        **{c: pl.lit(None, df.schema[c]) for c in vector_columns},
    ).select(marked.columns).cast(dict(marked.schema))
    counts = {**generated, "unchanged": planned - copies.height, "augmented": copies.height}
    return pl.concat([marked, new_rows]), counts


class Augment(Stage):
    """See the module docstring."""

    name = "augment"
    Options = Options
    kinds = ("text",)

    def __init__(self, options: Options | None = None):
        super().__init__(options)
        self.plan: Plan | None = None

    def check(self, schema: dict, dataset: Path) -> None:
        o = self.options
        require_columns(self.name, dataset, schema, ["id", o.text_column, o.label_column, o.split_column],
                        hint="augment reads `pipeline split` output of labelled rows")

    def keyed_vectors_path(self, inputs: list[Path]) -> Path | None:
        if not set(self.options.ops) & set(eda.SYNONYM_OPS):
            return None
        if self.options.word2vec_model:
            path = Path(self.options.word2vec_model)
        else:
            path = Path(inputs[0]).resolve().parent / "features" / "_models" / W2V_KV
        if not path.is_file():
            raise JobError(f"augment: ops {sorted(set(self.options.ops) & set(eda.SYNONYM_OPS))} need Word2Vec "
                           f"neighbours, and {path} does not exist; run `pipeline features --word2vec` in the "
                           "job, give word2vec_model = PATH (a gensim KeyedVectors .kv), or use ops = "
                           "[\"swap\", \"delete\"]")
        return path

    def fingerprint(self, inputs: list[Path]) -> dict:
        from pipeline.dataset import file_sha256

        path = self.keyed_vectors_path(inputs)
        return {**self.options.fingerprint_dict(), "word2vec_sha256": file_sha256(path) if path else None}

    def fit(self, run: StageRun) -> Plan:
        """Count train rows per class per shard; share each class's new rows out over the shards."""
        per_shard = run.map(count_train, [CountTask(s, self.options) for s in run.shards],
                            [str(s) for s in run.shards], desc="augment:count")
        totals: dict[str, int] = {}
        for counts in per_shard:
            for c, n in counts.items():
                totals[c] = totals.get(c, 0) + n
        path = self.keyed_vectors_path(run.inputs)
        self.plan = Plan(self.options, share_out(needs(totals, self.options), per_shard),
                         str(path) if path else None)
        return self.plan

    def plan_for_shard(self, plan: Plan, task: ShardTask) -> Plan:
        return Plan(plan.options, {}, plan.keyed_vectors, plan.quotas.get(task.index, {}))

    def transform(self, frame: pl.LazyFrame, plan: Plan) -> ShardOutput:
        keyed_vectors = eda.load_keyed_vectors(Path(plan.keyed_vectors)) if plan.keyed_vectors and plan.shard_quota else None
        out, counts = augment_frame(frame.collect(), plan.options, plan.shard_quota, keyed_vectors)
        return ShardOutput({"main": out}, counts=counts)

    def details(self, run: StageRun, records: list[TaskRecord]) -> dict:
        """What was generated per class and operation."""
        generated: dict[str, dict[str, int]] = {}
        for record in records:
            for key, n in record.counts.items():
                if key.startswith("generated:"):
                    _, c, op = key.split(":", 2)
                    generated.setdefault(c, {})
                    generated[c][op] = generated[c].get(op, 0) + n
        return {"generated": {c: dict(sorted(v.items())) for c, v in sorted(generated.items())},
                "word2vec_model": str(path) if (path := self.keyed_vectors_path(run.inputs)) else None}
