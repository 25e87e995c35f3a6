"""Label documents: a cluster map, propagation from seeds, or a calibrated model; and the queue.

Reads the output of `pipeline cluster` (or `pipeline features`) and writes every row with
`label`, `label_confidence` (Float32) and `label_source` (source | map | seed | model |
abstained). Labels already in the input are kept unless --overwrite. Three routes (--route;
auto = propagate with --seed-labels, else map); which to use when: docs/labelling.md.

map: --map labels.toml gives each cluster's rows its name (same name = merged clusters;
`drop = true` moves the rows to rejected/ with reason cluster_dropped); default: the
labels.toml beside the input, whose names default to each cluster's top terms.

propagate: --seed-labels FILE (CSV/JSONL/Parquet with id,label) trains a linear classifier on
the seed rows' vectors and labels the rest; predictions below --min-confidence stay null.

model: an SGD log-loss classifier fitted out-of-core on every row that has a label (the input's
own, --seed-labels, --answers, a --map's names, a --train-dataset), cross-validated per fold
and calibrated; rows under --min-confidence are `abstained` (label null). --queue N writes the
N rows a person should label next to OUTPUT/queue.csv; the edited file comes back with
--answers FILE as seed labels.

\b
Example:
  pipeline label --input out/clusters --output out/labelled --route model --seed-labels seeds.csv --queue 100
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
from pipeline.label import labelmap, model, propagate, queue
from pipeline.records import KINDS
from pipeline.stage import REASON, ShardOutput, Stage, StageResult, StageRun
from pipeline.stage import Options as StageOptions

MODELS = "_models"
CLASSIFIER = "classifier.pkl"
SEEDS = "seeds.parquet"
LABELS = "labels.toml"
MODEL_FILE, MODEL_INFO, TRAIN_WORK = "model.pkl", "model.json", "_work"
QUEUE_FOLDER, QUEUE_CSV = "_queue", "queue.csv"


class Options(StageOptions):
    route: Literal["auto", "map", "propagate", "model"] = "auto"
    """map: apply labels.toml; propagate: a classifier on --seed-labels only; model: a calibrated
    classifier fitted on every labelled row (see docs/labelling.md); auto: propagate with
    --seed-labels, else map."""
    map: str | None = None
    """labels.toml to apply (default, route map: labels.toml in the input folder; route model:
    its names are training labels, unnamed clusters are left to the model)."""
    seed_labels: str | None = None
    """CSV/JSONL/Parquet file of `id,label` rows a person labelled (route propagate or model)."""
    answers: list[str] = []
    """Edited queue CSVs (id,...,label; blank labels skipped) read as seed labels; repeatable,
    a later file wins for the same id, and over --seed-labels."""
    train_dataset: str | None = None
    """Route model: a separate labelled dataset (a folder of shards with `id`, `label` and the
    same vector columns, e.g. made by `pipeline features --models` of this corpus) to learn from."""
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    """Predicted labels with a lower probability are left null (propagate: counted as
    below_confidence; model: label_source = abstained)."""
    overwrite: bool = False
    """Replace labels already present in the input (default: keep them, label_source=source)."""
    vectors: list[str] = []
    """Vector columns the classifier uses (repeatable; default as in `pipeline cluster`)."""
    normalize: bool = True
    """L2-normalise each row's vector before training and prediction."""
    classifier: Literal["logistic", "sgd"] = "logistic"
    """Route propagate: logistic regression (lbfgs) or SGD with log loss (for very many seeds)."""
    class_weight: Literal["none", "balanced"] = "none"
    """balanced: weight classes inversely to their frequency among the labelled rows."""
    folds: int = Field(5, ge=2, le=20)
    """Route model: cross-validation folds (by a hash of the id); the out-of-fold scores give the
    per-fold accuracy and macro-F1 and calibrate the probabilities."""
    epochs: int = Field(10, ge=1, le=200)
    """Route model: passes of SGD partial_fit over the labelled rows."""
    alpha: float = Field(1e-4, gt=0.0, le=1.0)
    """Route model: L2 regularisation of the SGD classifier."""
    batch_rows: int = Field(4096, ge=16)
    """Route model: rows per partial_fit call."""
    queue: int = Field(0, ge=0)
    """Route model: write the N rows a person should label next (smallest margin, spread over
    clusters) to --queue-file; 0 = no queue."""
    queue_file: str | None = None
    """Where the queue CSV goes (default: queue.csv in the output folder)."""
    seed: int = 42
    """Seed of the classifier, its folds and shuffles."""

    @model_validator(mode="after")
    def _one_mode(self) -> Options:
        route = self.resolved_route
        if route == "propagate" and self.map:
            raise ValueError("give either map or seed_labels, not both (or route = \"model\", which "
                             "learns from both)")
        if route == "propagate" and not (self.seed_labels or self.answers):
            raise ValueError("route propagate needs seed_labels (or answers)")
        if route == "map" and (self.answers or self.train_dataset):
            raise ValueError("answers and train_dataset need route = \"model\" (or propagate for answers)")
        if self.queue and route != "model":
            raise ValueError("queue needs route = \"model\" (the queue ranks the model's margins)")
        return self

    @property
    def resolved_route(self) -> str:
        if self.route != "auto":
            return self.route
        return "propagate" if self.seed_labels or self.answers else "map"


@dataclass
class Plan:
    """What the per-shard transform needs; its fingerprint covers the map/seed file contents."""

    options: Options
    mode: Literal["map", "seeds", "model"]
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


def person_labels(options: Options) -> pl.DataFrame:
    """id, label a person gave: --seed-labels, then every --answers file (a later file wins)."""
    parts = [propagate.read_seeds(Path(options.seed_labels))] if options.seed_labels else []
    parts += [queue.read_answers(Path(a)) for a in options.answers]
    if not parts:
        return pl.DataFrame(schema={"id": pl.String, "label": pl.String})
    return pl.concat(parts).reverse().unique("id", keep="first", maintain_order=True).reverse()


def _digest(options: Options) -> str:
    """SHA-256 of every file the labels come from (an edit re-runs the stage)."""
    from pipeline.dataset import Dataset, fingerprint_of

    files = [options.seed_labels, *options.answers, options.map]
    parts = [file_sha256(Path(f)) if f and Path(f).is_file() else f for f in files]
    if options.train_dataset:
        parts.append(Dataset(options.train_dataset).fingerprint())
    return fingerprint_of(parts)


def _plan(inputs: list[Path], options: Options) -> Plan:
    route = options.resolved_route
    if route == "propagate":
        return Plan(options, "seeds", file_digest=_digest(options))
    if route == "model":
        entries = labelmap.read_label_map(Path(options.map)) if options.map else []
        return Plan(options, "model", map_entries=entries, file_digest=_digest(options))
    path = Path(options.map) if options.map else Path(inputs[0]) / LABELS
    if not options.map and not path.exists():
        raise JobError(f"pipeline label: no --map given and no {path}; run `pipeline cluster` "
                       "first or give --map FILE or --seed-labels FILE")
    entries = labelmap.read_label_map(path)
    return Plan(options, "map", map_entries=entries, file_digest=file_sha256(path))


def train(shards: list[Path], plan: Plan, output: Path, engine: Engine) -> dict:
    """Fetch the seeds' vectors, train and save the classifier; return what to report."""
    options = plan.options
    seeds = person_labels(options)
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


# -- route model -----------------------------------------------------------------------------

@dataclass
class TrainingRowsTask:
    """Gather one shard's labelled rows (id, label, fold, vectors) into a training file."""

    shard: Path
    spec: VectorSpec
    target: Path
    plan: Plan
    own_input: bool  # an input shard (person, source and map labels) or a --train-dataset shard


def _training_label(df: pl.DataFrame, plan: Plan, seeds: pl.DataFrame, own_input: bool) -> pl.DataFrame:
    """`_train_label` and `_train_from` of every row: a person's, else the input's own, else the map's."""
    if not own_input:
        return df.with_columns(pl.col("label").cast(pl.String).alias(model.LABEL), _train_from=pl.lit("dataset"))
    df = df.join(seeds.rename({"label": "_person"}), on="id", how="left", maintain_order="left")
    own = (pl.col("label").cast(pl.String) if "label" in df.columns and not plan.options.overwrite
           else pl.lit(None, pl.String))
    mapped = pl.lit(None, pl.String)
    if plan.map_entries and "cluster" in df.columns:
        df = df.with_columns(pl.col("cluster").cast(pl.Int32).alias("_cluster_key")).join(
            labelmap.map_frame(plan.map_entries), left_on="_cluster_key", right_on="cluster",
            how="left", maintain_order="left").drop("_cluster_key")
        mapped = pl.when(pl.col("_map_drop").fill_null(False)).then(None).otherwise(pl.col("_map_label"))
    return df.with_columns(
        pl.coalesce(pl.col("_person"), own, mapped).alias(model.LABEL),
        _train_from=pl.when(pl.col("_person").is_not_null()).then(pl.lit("seed"))
        .when(own.is_not_null()).then(pl.lit("source")).when(mapped.is_not_null()).then(pl.lit("map")))


def gather_training_rows(task: TrainingRowsTask) -> dict[str, int]:
    """Worker: write the shard's labelled rows to its training file; counts by class and origin."""
    plan = task.plan
    schema = pl.read_parquet_schema(task.shard)
    extra = ["id"] + [c for c in ("label", "cluster") if c in schema]
    df = task.spec.read(task.shard, extra)
    seeds = pl.read_parquet(plan.models / SEEDS)
    labelled = (_training_label(df, plan, seeds, task.own_input)
                .filter(pl.col(model.LABEL).is_not_null())
                .with_columns(model.fold_expr(plan.options.seed, plan.options.folds).alias(model.FOLD)))
    columns = vectors.read_columns(task.spec.columns)
    from pipeline.dataset import write_shard

    write_shard(labelled.select("id", model.LABEL, model.FOLD, *columns), task.target.parent, task.target.name)
    counts = {f"class:{c}": n for c, n in labelled.group_by(model.LABEL).len().iter_rows()}
    counts.update({f"from:{c}": n for c, n in labelled.group_by("_train_from").len().iter_rows()})
    return counts


def fit_model(run: StageRun, plan: Plan) -> dict:
    """Gather the labelled rows, cross-validate, calibrate and save the model; what to report."""
    options = plan.options
    work = plan.models / TRAIN_WORK
    seeds = person_labels(options)
    seeds.write_parquet(plan.models / SEEDS)
    extra_shards: list[Path] = []
    if options.train_dataset:
        from pipeline.dataset import Dataset

        extra_shards = Dataset(options.train_dataset).require_shards()
        schema = dict(pl.read_parquet_schema(extra_shards[0]))
        if "label" not in schema:
            raise missing_column("label", "label", options.train_dataset, schema,
                                 hint="--train-dataset must hold labelled rows")
        try:
            vectors.choose(schema, plan.spec.columns)
        except ValueError as error:
            raise InputError(f"label: --train-dataset {options.train_dataset}: {error}") from None
    sources = [(s, True) for s in run.shards] + [(s, False) for s in extra_shards]
    tasks = [TrainingRowsTask(s, plan.spec, work / f"train-{i:05d}.parquet", plan, own)
             for i, (s, own) in enumerate(sources)]
    results = run.map(gather_training_rows, tasks, [str(t.shard) for t in tasks], desc="label-gather")
    totals: dict[str, int] = {}
    for counts in results:
        for key, n in counts.items():
            totals[key] = totals.get(key, 0) + n
    per_class = {k.split(":", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("class:")}
    origins = {k.split(":", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("from:")}
    if len(per_class) < 2:
        raise JobError(f"label: route model needs labelled rows of at least two classes; found "
                       f"{per_class or 'none'} (give --seed-labels, --answers, --map or --train-dataset, "
                       "or label a queue first)")
    labelled = sum(per_class.values())
    if labelled < options.folds:
        raise JobError(f"label: route model needs at least folds={options.folds} labelled rows, found {labelled}")
    classes = np.array(sorted(per_class), dtype=object)
    weight = None
    if options.class_weight == "balanced":
        weight = {c: labelled / (len(classes) * per_class[c]) for c in classes}
    training = model.Training([t.target for t in tasks], plan.spec, classes, weight, options.epochs,
                              options.batch_rows, options.alpha, options.seed)
    fitted, scores = run.engine.run_on_driver(lambda: model.fit_calibrated(training, options.folds))
    model.save(fitted, plan.models / MODEL_FILE)
    info = {"route": "model", "classifier": "SGDClassifier(log_loss) + Platt calibration on out-of-fold values",
            "classes": [str(c) for c in classes], "labelled_rows": labelled, "labelled_per_class": per_class,
            "labelled_from": origins, "person_labels": seeds.height, "vectors": plan.spec.columns,
            **model.summary_of(scores)}
    write_json_atomic(plan.models / MODEL_INFO, info)
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # the training files: rebuilt from the input on a re-fit
    return info


def model_shard(frame: pl.LazyFrame, plan: Plan) -> ShardOutput:
    """Worker: labelled rows keep their label; the rest get the model's, or abstain below the threshold."""
    df = frame.collect()
    df = df.drop([c for c in ("label_confidence", "label_source") if c in df.columns])
    if "label" not in df.columns:
        df = df.with_columns(label=pl.lit(None, pl.String))
    fitted = model.load(plan.models / MODEL_FILE)
    seeds = pl.read_parquet(plan.models / SEEDS)
    x = plan.spec.matrix(df.select(vectors.read_columns(plan.spec.columns)))
    guess, confidence, margin = model.top_two(fitted.predict_proba(x), fitted.classes_)
    df = _training_label(df.with_columns(pl.Series("_guess", guess, dtype=pl.String),
                                         pl.Series("_conf", confidence, dtype=pl.Float32),
                                         pl.Series("_margin", margin, dtype=pl.Float32)),
                         plan, seeds, own_input=True)
    known = pl.col(model.LABEL).is_not_null()
    confident = pl.col("_conf") >= plan.options.min_confidence
    out = df.with_columns(
        label=pl.when(known).then(pl.col(model.LABEL)).when(confident).then(pl.col("_guess")).otherwise(None),
        label_confidence=pl.when(known).then(pl.lit(1.0)).otherwise(pl.col("_conf")).cast(pl.Float32),
        label_source=pl.when(known).then(pl.col("_train_from")).when(confident).then(pl.lit("model"))
        .otherwise(pl.lit("abstained")),
    )
    frames = {}
    if plan.options.queue:
        pool = out.filter(pl.col("label_source").is_in(["model", "abstained"]))
        if "cluster" not in pool.columns:
            pool = pool.with_columns(cluster=pl.lit(None, pl.Int64))
        frames["queue"] = queue.candidates(pool, plan.options.queue)
    temporary = ["_guess", "_conf", "_margin", model.LABEL, "_train_from", "_person", "_map_label", "_map_drop"]
    out = out.drop([c for c in temporary if c in out.columns])
    counts = {f"labelled_{s}": n for s, n in out.group_by("label_source").len().iter_rows()}
    return ShardOutput({"main": out, **frames}, counts=counts)


class Label(Stage):
    """See the module docstring."""

    name = "label"
    Options = Options
    kinds = KINDS
    secondary = ("rejected",)

    def __init__(self, options: Options | None = None):
        super().__init__(options)
        self.plan: Plan | None = None

    def outputs(self, output: Path) -> dict[str, Path]:
        folders = super().outputs(output)
        if self.options.queue:
            folders["queue"] = output / QUEUE_FOLDER  # each shard's candidates; queue.csv is made from them
        return folders

    def fingerprint(self, inputs: list[Path]) -> dict:
        """The options, the mode and the content of the map, seed, answer files and train dataset."""
        self.plan = _plan(inputs, self.options)
        return self.plan.fingerprint_dict()

    def check(self, schema: dict, dataset: Path) -> None:
        if self.options.resolved_route in ("propagate", "model"):
            try:
                vectors.choose(schema, self.options.vectors)
            except ValueError as error:
                raise InputError(f"label: input dataset {dataset}: {error}") from None
        elif "cluster" not in schema:
            raise missing_column(self.name, "cluster", dataset, schema,
                                 hint="run `pipeline cluster` first, or use --seed-labels FILE or --route model")

    def transform(self, frame: pl.LazyFrame, plan: Plan) -> ShardOutput:
        if plan.mode == "model":
            return model_shard(frame, plan)
        return seeds_shard(frame, plan) if plan.mode == "seeds" else map_shard(frame, plan)

    def fit(self, run: StageRun) -> Plan:
        """Propagate: train on the seeds' vectors; model: gather, cross-validate, calibrate."""
        plan = self.plan if self.plan is not None else _plan(run.inputs, self.options)
        if plan.mode in ("seeds", "model"):
            from pipeline.cluster import _n_features

            schema = dict(pl.read_parquet_schema(run.shards[0]))
            plan.spec = VectorSpec(vectors.choose(schema, self.options.vectors), self.options.normalize,
                                   _n_features(run.inputs))
            plan.models = run.output / MODELS
            plan.models.mkdir(parents=True, exist_ok=True)
            if plan.mode == "seeds":
                train(run.shards, plan, run.output, run.engine)
            else:
                fit_model(run, plan)
        return plan

    def details(self, run: StageRun, records: list) -> dict:
        mode = self.plan.mode if self.plan is not None else _plan(run.inputs, self.options).mode
        details: dict = {"mode": mode}
        if mode == "seeds":
            details.update(json.loads((run.output / MODELS / "classifier.json").read_text()))
        if mode == "model":
            details.update(json.loads((run.output / MODELS / MODEL_INFO).read_text()))
            if self.options.queue:
                details["queue"] = self.write_queue(run)
        return details

    def write_queue(self, run: StageRun) -> dict:
        """Select the queue from every shard's candidates and write the CSV a person edits."""
        folder = run.output / QUEUE_FOLDER
        parts = [pl.read_parquet(p) for p in sorted(folder.glob("*.parquet")) if not p.name.startswith(".")]
        chosen = queue.select(parts, self.options.queue)
        path = Path(self.options.queue_file) if self.options.queue_file else run.output / QUEUE_CSV
        queue.write(chosen, path)
        return {"file": str(path), "rows": chosen.height,
                "clusters": chosen["cluster"].n_unique() if chosen.height else 0}


def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    return Label(options).run(inputs, output, engine, fresh=fresh)
