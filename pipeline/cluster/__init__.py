"""Group documents by topic: K-means over their feature vectors, fitted out-of-core over the shards.

Reads the output of `pipeline features` and writes every row with `cluster` (Int32) and
`cluster_distance` (Float32, Euclidean distance to its centre on L2-normalised vectors), plus,
beside the shards, summary.json (K and how it was chosen, per cluster: size, top terms, the
documents nearest the centre) and labels.toml, a label map to edit and give to `pipeline label
--map` (cluster names default to their top three terms). --k auto picks K at the elbow of the
K-means inertia on a sample; k-means++ on the sample gives the first centres and full-batch Lloyd passes over the
shards refine them. Centres are saved in OUTPUT/_models/. The same input, options and --seed give
the same clusters, in process or on Dask, whatever the order of the rows.

Example: pipeline cluster --input out/features --output out/clusters --k 8 --seed 1
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Literal

import click
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import scipy.sparse as sp
from pydantic import Field, field_validator, model_validator

from pipeline.cluster import kmeans, summary
from pipeline.dataset import write_bytes_atomic, write_json_atomic
from pipeline.engine import Engine
from pipeline.errors import InputError, JobError
from pipeline.features import vectors
from pipeline.records import KINDS
from pipeline.stage import Options as StageOptions
from pipeline.stage import ShardOutput, Stage, StageResult, StageRun

MODELS = "_models"
CENTRES = "centres.npy"
MODEL_META = "cluster.json"
SUMMARY = "summary.json"
LABELS = "labels.toml"
LABELS_HASH = "labels.sha256"  # in _models/: the map as last written, to tell a person's edits
ASSIGN_GROUP = 64  # shards per engine.map call of the assign pass


class Options(StageOptions):
    k: str = "auto"
    """Number of clusters, or "auto": chosen on the sample among [--k-min, --k-max] by --k-criterion
    (a guess, up to about 3 times the number of topics on corpora with few: give K when you know it)."""
    k_min: int = Field(2, ge=2)
    """Smallest K tried by --k auto."""
    k_max: int | None = Field(None, ge=2, le=200)
    """Largest K tried by --k auto (default: sqrt(sample rows / 2), at most 50: 50 for the default
    5,000-row sample)."""
    k_criterion: Literal["elbow", "silhouette"] = "elbow"
    """How --k auto picks K from one KMeans fit per K on the sample: "elbow", the knee of the
    inertia curve (Kneedle, the `kneed` library); "silhouette", the highest silhouette (it keeps
    rising with K on LSA vectors, so it picks the top of the range: docs/stages/cluster.md)."""
    vectors: list[str] = []
    """Vector columns to cluster on, concatenated (repeatable; `tfidf` = the sparse TF-IDF pair).
    Default: tfidf_svd, else w2v, else every *_scaled column, else the sparse TF-IDF."""
    normalize: bool = True
    """L2-normalise each row's vector first (Euclidean K-means then groups by cosine)."""
    sample_size: int = Field(5000, ge=10)
    """Rows (about) in the deterministic sample used for --k auto, the initial centres and top terms."""
    batch_size: int = Field(1024, ge=16)
    """Rows per MiniBatch K-means partial_fit step."""
    passes: int = Field(0, ge=0, le=100)
    """Passes of MiniBatch partial_fit over all shards before the refinement (0, the default:
    none; mini-batch updates follow the order of the shards, and a corpus stored class by class
    pulled the centres to the last shards' topics: NMI 0.40 against 0.52, docs/stages/cluster.md)."""
    refine_passes: int = Field(30, ge=0, le=300)
    """Full-batch Lloyd passes over all shards (each one map returning per-cluster sums, so the
    result does not depend on the order of the shards); stops early when the centres move less
    than --refine-tol. 0 with --passes 0: the k-means++ centres of the sample as they are."""
    refine_tol: float = Field(1e-4, gt=0)
    """Relative movement of the centres under which the refinement stops."""
    top_terms: int = Field(10, ge=1, le=100)
    """Top terms listed per cluster in summary.json and labels.toml."""
    examples: int = Field(5, ge=0, le=100)
    """Documents nearest each centre listed per cluster."""
    text_column: str = "text"
    """Column the top terms and examples are taken from."""
    seed: int = 42
    """Seed of the sample, the initial centres and the mini-batch order."""

    @field_validator("k", mode="before")
    @classmethod
    def _k_text(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError("must be a whole number >= 2 or \"auto\"")
        value = value.strip().lower()
        if value != "auto" and (not value.isdigit() or int(value) < 2):
            raise ValueError(f"must be a whole number >= 2 or \"auto\", not {value!r}")
        return value

    @model_validator(mode="after")
    def _k_range(self) -> Options:
        if self.k_max is not None and self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) is above k_max ({self.k_max})")
        return self


@dataclass
class Plan:
    options: Options
    spec: kmeans.VectorSpec
    centres: Path
    fraction: float

    def fingerprint_dict(self) -> dict:
        return self.options.fingerprint_dict()


def assign_shard(frame: pl.LazyFrame, plan: Plan) -> ShardOutput:
    """Worker: add `cluster` and `cluster_distance`; count sizes, sample terms and examples."""
    options = plan.options
    df = frame.collect()
    centres = np.load(plan.centres)
    x = plan.spec.matrix(df.select(vectors.read_columns(plan.spec.columns)))
    nearest, distance = kmeans.assign(x, centres)
    df = df.drop([c for c in ("cluster", "cluster_distance") if c in df.columns]).with_columns(
        pl.Series("cluster", nearest, dtype=pl.Int32),
        pl.Series("cluster_distance", distance, dtype=pl.Float32),
    )
    sampled = df.filter(kmeans.sample_expr(options.seed, plan.fraction))
    sizes = df.group_by("cluster").len().sort("cluster")
    in_sample = sampled.group_by("cluster").len().sort("cluster")
    extra = {
        "sizes": [list(r) for r in sizes.iter_rows()],
        "sampled": [list(r) for r in in_sample.iter_rows()],
        "terms": summary.shard_terms(sampled, options.text_column),
        "examples": summary.shard_examples(df, options.text_column, options.examples) if options.examples else [],
        "sq_distance": float(np.square(distance.astype(np.float64)).sum()),
    }
    return ShardOutput({"main": df}, extra=extra)


def _n_features(inputs: list[Path]) -> int | None:
    meta = Path(inputs[0]) / "_models" / "features.json"
    return json.loads(meta.read_text())["n_features"] if meta.exists() else None


def fold_terms(records, counts: dict[tuple[int, str], int]) -> None:
    """Add the records' per-shard term counts into `counts` and drop them from the records (in
    memory only: the task records on disk keep them), so the driver holds one count per
    (cluster, word) of the sample, not one list per shard."""
    for record in records:
        for c, word, n in record.extra.get("terms", []):
            counts[(int(c), word)] = counts.get((int(c), word), 0) + int(n)
        record.extra = {**record.extra, "terms": []}


def fold_examples(records, nearest: dict[int, list[dict]], per_cluster: int) -> None:
    """Keep in `nearest` only the `per_cluster` examples nearest each centre among those seen so
    far and the records' own, and drop them from the records (in memory only, as fold_terms), so
    the driver holds k x per_cluster examples, not that many per shard."""
    for record in records:
        for e in record.extra.get("examples", []):
            nearest.setdefault(int(e["cluster"]), []).append(e)
        record.extra = {**record.extra, "examples": []}
    for c, found in nearest.items():
        nearest[c] = sorted(found, key=lambda e: (e["distance"], e["id"]))[:per_cluster]


def build_summary(records, options: Options, model_meta: dict,
                  term_counts: dict[tuple[int, str], int] | None = None,
                  nearest: dict[int, list[dict]] | None = None) -> dict:
    k = model_meta["k"]
    sizes = np.zeros(k, dtype=np.int64)
    sampled: dict[int, int] = {}
    term_counts = dict(term_counts or {})
    fold_terms(records, term_counts)
    examples = {c: list(found) for c, found in (nearest or {}).items()}
    fold_examples(records, examples, options.examples)
    sq = 0.0
    for record in sorted(records, key=lambda r: r.task):
        extra = record.extra
        for c, n in extra["sizes"]:
            sizes[c] += n
        for c, n in extra["sampled"]:
            sampled[int(c)] = sampled.get(int(c), 0) + int(n)
        sq += extra["sq_distance"]
    top = summary.top_terms(((c, w, n) for (c, w), n in term_counts.items()), sampled, options.top_terms)
    names = summary.default_names(top, k)
    clusters = []
    for c in range(k):
        nearest_c = examples.get(c, [])
        clusters.append({
            "cluster": c, "name": names[c], "size": int(sizes[c]),
            "share": round(float(sizes[c]) / max(int(sizes.sum()), 1), 6), "top_terms": top.get(c, []),
            "examples": [{k_: e[k_] for k_ in ("id", "title", "text", "distance")} for e in nearest_c],
        })
    rows = int(sizes.sum())
    return {**model_meta, "rows": rows, "mean_squared_distance": round(sq / max(rows, 1), 6),
            "clusters": clusters}


class Cluster(Stage):
    """See the module docstring."""

    name = "cluster"
    Options = Options
    kinds = KINDS
    transform = staticmethod(assign_shard)
    keep = (LABELS, "labels.edited-*.toml", f"{MODELS}/{LABELS_HASH}")
    map_group = ASSIGN_GROUP  # terms and examples folded group by group: flat driver memory

    def __init__(self, options: Options | None = None):
        super().__init__(options)
        self.columns: list[str] = []
        self.term_counts: dict[tuple[int, str], int] = {}
        self.nearest: dict[int, list[dict]] = {}

    def check(self, schema: dict, dataset: Path) -> None:
        try:
            self.columns = vectors.choose(schema, self.options.vectors)
        except ValueError as error:
            raise InputError(f"cluster: input dataset {dataset}: {error}") from None

    def fit(self, run: StageRun) -> Plan:
        """Sample, choose K and fit the centres (k-means++ on the sample, then passes over the shards)."""
        spec = kmeans.VectorSpec(self.columns, self.options.normalize, _n_features(run.inputs))
        fraction = min(1.0, self.options.sample_size / max(run.rows_in, 1))
        from threadpoolctl import threadpool_limits

        # small problems (a bounded sample, one mini-batch at a time): one OpenMP/BLAS thread is
        # as fast, and many threads spin against the Dask workers (or a busy machine) instead
        with threadpool_limits(limits=1):
            fit(run.shards, spec, self.options, fraction, run.output / MODELS, run.engine)
        return Plan(self.options, spec, run.output / MODELS / CENTRES, fraction)

    def absorb(self, records: list) -> None:
        fold_terms(records, self.term_counts)
        fold_examples(records, self.nearest, self.options.examples)

    def details(self, run: StageRun, records: list) -> dict:
        """summary.json and (after a refit) a fresh labels.toml; an edited one is kept aside."""
        output = run.output
        model_meta = json.loads((output / MODELS / MODEL_META).read_text())
        result_summary = build_summary(records, self.options, model_meta, self.term_counts, self.nearest)
        write_json_atomic(output / SUMMARY, result_summary)
        details = {"summary": SUMMARY, "labels": LABELS, "k": model_meta["k"],
                   "k_chosen_by": model_meta["k_chosen_by"], "k_range": model_meta.get("k_range"),
                   "vectors": self.columns, "sizes": [c["size"] for c in result_summary["clusters"]]}
        if run.todo or not (output / LABELS).exists():
            kept = write_label_map(output, summary.labels_toml(result_summary, str(output)))
            if kept is not None:
                details["edited_labels_kept_as"] = str(kept)
        return details


def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    return Cluster(options).run(inputs, output, engine, fresh=fresh)


def write_label_map(output: Path, text: str) -> Path | None:
    """Write OUTPUT/labels.toml; an edited one it would replace is kept first. Returns its new path.

    A re-run that refits the clusters writes a fresh map (cluster ids may now mean other
    topics), but a person's edits are never lost: the map on disk is compared with the hash of
    the one this stage last wrote (OUTPUT/_models/labels.sha256), and if it differs (or the hash
    is missing) it is renamed to labels.edited-<UTC time>.toml, and a warning names it.
    """
    import hashlib
    from datetime import datetime

    path, mark = output / LABELS, output / MODELS / LABELS_HASH
    data = text.encode()  # TOML is UTF-8
    digest = hashlib.sha256(data).hexdigest()
    kept = None
    if path.exists():
        current = hashlib.sha256(path.read_bytes()).hexdigest()
        written = mark.read_text().strip() if mark.exists() else None
        if current not in (digest, written):  # neither the new map nor the one written last
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            kept, n = output / f"labels.edited-{stamp}.toml", 1
            while kept.exists():  # two refits within a second: never overwrite a kept map
                kept, n = output / f"labels.edited-{stamp}-{n}.toml", n + 1
            path.replace(kept)
            click.echo(f"pipeline cluster: {path} was edited since the clusters were last fitted; kept it "
                       f"as {kept} (cluster ids may have changed: check them before re-applying your "
                       "names), and wrote a fresh map", err=True)
    write_bytes_atomic(path, data)
    write_bytes_atomic(mark, digest.encode() + b"\n")
    return kept


def fit(shards: list[Path], spec: kmeans.VectorSpec, options: Options, fraction: float,
        models: Path, engine: Engine) -> dict:
    """Sample, choose K, k-means++ on the sample, optional mini-batch passes, Lloyd passes; save centres and meta."""
    tasks = [kmeans.SampleTask(s, spec, fraction, options.seed) for s in shards]
    sample = kmeans.stack_sample(engine.map(kmeans.sample_shard, tasks, labels=[str(s) for s in shards],
                                     desc="cluster-sample"))
    k_range = None
    if options.k == "auto":
        k_max = options.k_max or kmeans.default_k_max(sample.shape[0], options.k_min)
        k_range = [options.k_min, k_max]
        k, scores = engine.run_on_driver(lambda: kmeans.choose_k(
            sample, options.k_min, k_max, options.seed, options.k_criterion))
        chosen_by = options.k_criterion
    else:
        k, scores, chosen_by = int(options.k), {}, "option"
    if sample.shape[0] < k:
        raise JobError(f"--k {k}: only {sample.shape[0]} rows sampled; lower --k or raise --sample-size")
    centres = kmeans.initial_centres(sample, k, options.seed)
    if options.passes == 0:
        fitted_by, model = "k-means++ on the sample", None
    elif engine.local or sp.issparse(sample):
        fitted_by = "partial_fit shard by shard on the driver"
        model = engine.run_on_driver(lambda: kmeans.fit_minibatch(
            shards, spec, centres, options.batch_size, options.passes, options.seed))
    else:
        fitted_by = "dask-ml Incremental over the shards"
        engine.start()
        rows = [pq.ParquetFile(s).metadata.num_rows for s in shards]
        model = kmeans.fit_incremental(shards, rows, sample.shape[1], spec, centres, options.batch_size,
                                       options.passes, options.seed, engine)
    centres = model.cluster_centers_ if model is not None else centres
    inertia: list[float] = []
    if options.refine_passes:
        centres, inertia = kmeans.refine_lloyd(shards, spec, centres, options.refine_passes,
                                               options.refine_tol, engine)
        fitted_by += f", then {len(inertia)} Lloyd passes over the shards"
    models.mkdir(parents=True, exist_ok=True)
    np.save(models / CENTRES, np.asarray(centres, dtype=np.float64))
    score_name = {"elbow": "inertia", "silhouette": "silhouette"}.get(chosen_by)
    meta = {"k": k, "k_chosen_by": chosen_by, "k_range": k_range, "k_score": score_name,
            "scores_by_k": {str(a): b for a, b in scores.items()}, "vectors": spec.columns, "normalize": spec.normalize,
            "sample_rows": int(sample.shape[0]), "seed": options.seed, "fitted_by": fitted_by, "refine_inertia": inertia}
    write_json_atomic(models / MODEL_META, meta)
    return meta
