"""Label documents: name clusters with an edited labels.toml, or propagate a few seed labels.

Reads the output of `pipeline cluster` (or `pipeline features` with --seed-labels) and writes
every row with `label`, `label_confidence` (Float32) and `label_source` (source | map | seed |
model). --map labels.toml gives each cluster's rows its name (same name = merged clusters;
`drop = true` moves the rows to rejected/ with reason cluster_dropped); with neither option the
labels.toml beside the input is used, whose names default to each cluster's top terms.
--seed-labels FILE (CSV/JSONL/Parquet with id,label) trains a linear classifier on the seed
rows' vectors and labels the rest; predictions below --min-confidence stay null and are counted.
Labels already present in the input are kept unless --overwrite.

Example: pipeline label --input out/clusters --output out/labelled --map out/clusters/labels.toml
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from pipeline.cluster.kmeans import VectorSpec
from pipeline.dataset import file_sha256, write_json_atomic
from pipeline.engine import Engine
from pipeline.errors import InputError, JobError, missing_column
from pipeline.features import vectors
from pipeline.label import labelmap, propagate
from pipeline.records import KINDS
from pipeline.stage import REASON, ShardOutput, Stage, StageResult, StageRun
from pipeline.stage import Options as StageOptions

MODELS = "_models"
CLASSIFIER = "classifier.pkl"
SEEDS = "seeds.parquet"
LABELS = "labels.toml"


class Options(StageOptions):
    map: str | None = None
    """labels.toml to apply (default, without --seed-labels: labels.toml in the input folder)."""
    seed_labels: str | None = None
    """CSV/JSONL/Parquet file of `id,label` seed rows: train a classifier and propagate instead."""
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    """Predicted labels with a lower probability are left null (counted as below_confidence)."""
    overwrite: bool = False
    """Replace labels already present in the input (default: keep them, label_source=source)."""
    vectors: list[str] = []
    """Vector columns the classifier uses (repeatable; default as in `pipeline cluster`)."""
    normalize: bool = True
    """L2-normalise each row's vector before training and prediction."""
    classifier: Literal["logistic", "sgd"] = "logistic"
    """Logistic regression (lbfgs) or SGD with log loss (for very many seeds)."""
    class_weight: Literal["none", "balanced"] = "none"
    """balanced: weight seed classes inversely to their frequency."""
    seed: int = 42
    """Seed of the classifier."""

    @model_validator(mode="after")
    def _one_mode(self) -> Options:
        if self.map and self.seed_labels:
            raise ValueError("give either map or seed_labels, not both")
        return self


@dataclass
class Plan:
    """What the per-shard transform needs; its fingerprint covers the map/seed file contents."""

    options: Options
    mode: Literal["map", "seeds"]
    map_entries: list = field(default_factory=list)
    spec: VectorSpec | None = None
    models: Path | None = None
    file_digest: str = ""

    def fingerprint_dict(self) -> dict:
        return {**self.options.fingerprint_dict(), "mode": self.mode, "file_sha256": self.file_digest}


def _keep_source(df: pl.DataFrame, options: Options) -> pl.Expr:
    if options.overwrite or "label" not in df.columns:
        return pl.lit(False)
    return pl.col("label").is_not_null()


def _finish(df: pl.DataFrame, source_kept: pl.Expr, new_label: pl.Expr, new_conf: pl.Expr,
            new_source: pl.Expr) -> pl.DataFrame:
    if "label" not in df.columns:
        df = df.with_columns(label=pl.lit(None, pl.String))
    return df.with_columns(_kept=source_kept).with_columns(
        label=pl.when("_kept").then(pl.col("label")).otherwise(new_label),
        label_confidence=pl.when("_kept").then(pl.lit(1.0, pl.Float32)).otherwise(new_conf).cast(pl.Float32),
        label_source=pl.when("_kept").then(pl.lit("source")).otherwise(new_source),
    ).drop("_kept")


def map_shard(frame: pl.LazyFrame, plan: Plan) -> ShardOutput:
    """Worker: apply the label map (join on `cluster`); dropped clusters → rejected."""
    df = frame.collect()
    if "cluster" not in df.columns:
        raise InputError("label: the input has no `cluster` column: run `pipeline cluster` first, or use --seed-labels")
    df = df.drop([c for c in ("label_confidence", "label_source") if c in df.columns])
    joined = df.with_columns(pl.col("cluster").cast(pl.Int32)).join(
        labelmap.map_frame(plan.map_entries), on="cluster", how="left", maintain_order="left")
    dropped = joined["_map_drop"].fill_null(False)
    rejected = joined.filter(dropped).drop("_map_label", "_map_drop").with_columns(
        pl.lit("cluster_dropped").alias(REASON))
    kept = joined.filter(~dropped)
    mapped = pl.col("_map_label")
    out = _finish(kept, _keep_source(kept, plan.options), mapped,
                  pl.when(mapped.is_not_null()).then(pl.lit(1.0)).otherwise(None),
                  pl.when(mapped.is_not_null()).then(pl.lit("map")).otherwise(None))
    out = out.drop("_map_label", "_map_drop").with_columns(pl.col("cluster").cast(df.schema["cluster"]))
    counts = out.group_by("label_source").len().iter_rows()
    return ShardOutput({"main": out, "rejected": rejected},
                       counts={f"labelled_{s or 'none'}": n for s, n in counts})


def seeds_shard(frame: pl.LazyFrame, plan: Plan) -> ShardOutput:
    """Worker: seed rows keep their seed label; the rest get the classifier's, if confident."""
    df = frame.collect().drop([c for c in ("label_confidence", "label_source") if c in frame.collect_schema()])
    model = propagate.load_model(plan.models / CLASSIFIER)
    seeds = pl.read_parquet(plan.models / SEEDS).rename({"label": "_seed_label"})
    x = plan.spec.matrix(df.select(vectors.read_columns(plan.spec.columns)))
    predicted, confidence = propagate.predict(model, x)
    confident = confidence >= plan.options.min_confidence
    df = df.with_columns(
        pl.Series("_pred", np.where(confident, predicted, None), dtype=pl.String),
        pl.Series("_conf", confidence, dtype=pl.Float32),
    ).join(seeds, on="id", how="left", maintain_order="left")
    seed = pl.col("_seed_label").is_not_null()
    pred = pl.col("_pred").is_not_null()
    out = _finish(
        df, _keep_source(df, plan.options),
        pl.when(seed).then(pl.col("_seed_label")).otherwise(pl.col("_pred")),
        pl.when(seed).then(pl.lit(1.0)).when(pred).then(pl.col("_conf")).otherwise(None),
        pl.when(seed).then(pl.lit("seed")).when(pred).then(pl.lit("model")).otherwise(None),
    )
    below = int((out["label_source"].is_null()).sum())
    counts = {f"labelled_{s}": n for s, n in out.group_by("label_source").len().iter_rows() if s}
    counts["below_confidence"] = below
    return ShardOutput({"main": out.drop("_pred", "_conf", "_seed_label")}, counts=counts)


def _plan(inputs: list[Path], options: Options) -> Plan:
    if options.seed_labels:
        return Plan(options, "seeds", file_digest=file_sha256(Path(options.seed_labels))
                    if Path(options.seed_labels).is_file() else "")
    path = Path(options.map) if options.map else Path(inputs[0]) / LABELS
    if not options.map and not path.exists():
        raise JobError(f"pipeline label: no --map given and no {path}; run `pipeline cluster` "
                       "first or give --map FILE or --seed-labels FILE")
    entries = labelmap.read_label_map(path)
    return Plan(options, "map", map_entries=entries, file_digest=file_sha256(path))


def train(shards: list[Path], plan: Plan, output: Path, engine: Engine) -> dict:
    """Fetch the seeds' vectors, train and save the classifier; return what to report."""
    options = plan.options
    seeds = propagate.read_seeds(Path(options.seed_labels))
    ids = seeds["id"].to_list()
    tasks = [propagate.GatherTask(s, plan.spec, ids) for s in shards]
    results = engine.map(propagate.gather_shard, tasks, labels=[str(s) for s in shards], desc="label-seeds")
    x, y, found = propagate.training_set(results, seeds)
    weight = None if options.class_weight == "none" else options.class_weight
    model = engine.run_on_driver(lambda: propagate.train_classifier(x, y, options.classifier, weight, options.seed))
    cv = propagate.cross_validated_accuracy(x, y, options.classifier, weight, options.seed)
    plan.models.mkdir(parents=True, exist_ok=True)
    propagate.save_model(model, plan.models / CLASSIFIER)
    found_seeds = seeds.filter(pl.col("id").is_in(found))
    found_seeds.write_parquet(plan.models / SEEDS)
    info = {"seeds": seeds.height, "seeds_found": found_seeds.height,
            "seeds_missing": seeds.height - found_seeds.height,
            "classes": [str(c) for c in model.classes_], "seed_cv_accuracy": cv,
            "vectors": plan.spec.columns}
    write_json_atomic(plan.models / "classifier.json", info)
    return info


class Label(Stage):
    """See the module docstring."""

    name = "label"
    Options = Options
    kinds = KINDS
    secondary = ("rejected",)

    def __init__(self, options: Options | None = None):
        super().__init__(options)
        self.plan: Plan | None = None

    def fingerprint(self, inputs: list[Path]) -> dict:
        """The options, the mode and the content of the map or seed file."""
        self.plan = _plan(inputs, self.options)
        return self.plan.fingerprint_dict()

    def check(self, schema: dict, dataset: Path) -> None:
        if self.options.seed_labels:
            try:
                vectors.choose(schema, self.options.vectors)
            except ValueError as error:
                raise InputError(f"label: input dataset {dataset}: {error}") from None
        elif "cluster" not in schema:
            raise missing_column(self.name, "cluster", dataset, schema,
                                 hint="run `pipeline cluster` first, or use --seed-labels FILE")

    def transform(self, frame: pl.LazyFrame, plan: Plan) -> ShardOutput:
        return seeds_shard(frame, plan) if plan.mode == "seeds" else map_shard(frame, plan)

    def fit(self, run: StageRun) -> Plan:
        """With seed labels: gather the seeds' vectors and train the classifier."""
        plan = self.plan if self.plan is not None else _plan(run.inputs, self.options)
        if plan.mode == "seeds":
            from pipeline.cluster import _n_features

            schema = dict(pl.read_parquet_schema(run.shards[0]))
            plan.spec = VectorSpec(vectors.choose(schema, self.options.vectors), self.options.normalize,
                                   _n_features(run.inputs))
            plan.models = run.output / MODELS
            train(run.shards, plan, run.output, run.engine)
        return plan

    def details(self, run: StageRun, records: list) -> dict:
        details: dict = {"mode": "seeds" if self.options.seed_labels else "map"}
        if self.options.seed_labels:
            details.update(json.loads((run.output / MODELS / "classifier.json").read_text()))
        return details


def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    return Label(options).run(inputs, output, engine, fresh=fresh)
