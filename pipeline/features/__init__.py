"""Turn documents into vectors: hashing TF-IDF reduced by an out-of-core SVD, Word2Vec, scaled numbers.

Reads documents (any columns; `text` is vectorised) and writes them unchanged plus vector
columns: `tfidf_svd` (--tfidf, on by default: hashed TF-IDF projected on --svd-components
singular vectors, L2-normalised, Array(Float32)), `tfidf_idx`/`tfidf_val` (the sparse hashed
TF-IDF, with --keep-sparse or --svd-components 0), `w2v` (--word2vec: mean or TF-IDF-weighted
mean of gensim word vectors trained by streaming the shards) and `<col>_scaled` (--numeric COL
with a dask-ml --scaler fitted over all shards). Every fitted model (IDF, SVD components,
Word2Vec, scaler) is saved in OUTPUT/_models/; --models DIR reuses one on new data.

Example: pipeline features --input out/unique --output out/features --svd-components 100 --word2vec
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from pipeline.engine import Engine
from pipeline.errors import JobError, require_columns, wrong_type
from pipeline.features import numeric, text, vectors, word2vec
from pipeline.records import KINDS
from pipeline.stage import Options as StageOptions
from pipeline.stage import ShardOutput, ShardTask, Stage, StageResult, StageRun

MODELS = "_models"
WORK = "_work"
META = "features.json"
IDF_FILE, SVD_FILE, SVD_BUCKETS = "idf.npy", "svd_components.npy", "svd_buckets.npy"
W2V_FILE, W2V_KV, W2V_WEIGHTS = "word2vec.model", "word2vec.kv", "word2vec_weights.npy"
SCALER_FILE = "scaler.pkl"
IDF_GROUP = 64  # shards per engine.map call of the IDF pass (their frequencies on the driver at once)


class Options(StageOptions):
    text_column: str = "text"
    """Column whose text is vectorised (nulls count as empty)."""
    tfidf: bool = True
    """Hashing TF-IDF features (stateless hashing + one IDF pass), reduced by --svd-components."""
    n_features: int = Field(2**17, ge=16, le=2**22)
    """Hash buckets of the TF-IDF (more = fewer collisions, more memory in the SVD fit)."""
    stop_words: Literal["english", "none"] = "none"
    """Drop scikit-learn's English stop words before hashing ("english"), or keep every token
    ("none", the default: IDF and sublinear tf already damp them, and function words carry
    style, e.g. third-person narration vs first-person opinion)."""
    sublinear_tf: bool = True
    """Term frequency as 1 + ln(count) instead of the raw count."""
    min_df: int = Field(2, ge=1)
    """Buckets in fewer documents than this get IDF weight 0 (typos, ids, hapaxes)."""
    max_df: float = Field(1.0, gt=0.0, le=1.0)
    """Buckets in more than this fraction of documents get IDF weight 0."""
    svd_components: int = Field(100, ge=0, le=1000)
    """Dimensions of `tfidf_svd` (truncated SVD / LSA of the TF-IDF, streamed shard by shard;
    clamped below the number of documents); 0 = no SVD, write the sparse TF-IDF instead."""
    svd_vocabulary: int = Field(10_000, ge=2, le=2**22)
    """Buckets the SVD is fitted on: the (at most) this many with the highest document frequency
    among those with a non-zero IDF. Fixed, so the SVD's memory does not grow with the corpus."""
    svd_drop_first: bool = True
    """Leave out the first singular vector (the direction common to every document of the
    uncentred TF-IDF, close to the mean document; it dominates the cosine of short texts and
    hides their contrasts); one more component is fitted so --svd-components stay."""
    svd_iterations: int = Field(2, ge=0, le=10)
    """Power iterations of the randomized SVD (each is one more pass over the shards)."""
    keep_sparse: bool = False
    """Also write the sparse hashed TF-IDF as `tfidf_idx` (List(UInt32)) / `tfidf_val` (List(Float32))."""
    word2vec: bool = False
    """Word2Vec document vectors `w2v` (gensim, trained by streaming the shards, in this process)."""
    w2v_size: int = Field(100, ge=2, le=1000)
    """Word vector dimensions."""
    w2v_window: int = Field(5, ge=1)
    """Context window (words each side)."""
    w2v_min_count: int = Field(2, ge=1)
    """Words seen fewer times are left out of the vocabulary."""
    w2v_epochs: int = Field(5, ge=1)
    """Training passes over the corpus (each re-reads the shards)."""
    w2v_workers: int = Field(1, ge=1)
    """gensim training threads; 1 makes the model reproducible for a seed, more are faster."""
    w2v_weighting: Literal["tfidf", "mean"] = "tfidf"
    """Document vector: IDF-weighted mean of word vectors (with --stop-words english, stop words
    weigh 0) or plain mean."""
    numeric: list[str] = []
    """Numeric columns to scale into `<col>_scaled` (repeatable)."""
    scaler: Literal["standard", "minmax", "robust"] = "standard"
    """dask-ml scaler for --numeric: zero mean/unit variance, [0, 1], or median/IQR."""
    models: str | None = None
    """Folder of fitted models (an earlier run's OUTPUT/_models) to apply instead of fitting."""
    seed: int = 42
    """Seed of the randomized SVD and of Word2Vec."""

    def fingerprint_dict(self) -> dict:
        """The options, plus the size and mtime of every file of --models (refitted models = new run)."""
        values = super().fingerprint_dict()
        if self.models and Path(self.models).is_dir():
            values["models_files"] = sorted(
                (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(self.models).iterdir() if p.is_file())
        return values

    @model_validator(mode="after")
    def _something_to_do(self) -> Options:
        if not (self.tfidf or self.word2vec or self.numeric):
            raise ValueError("nothing to compute: enable --tfidf, --word2vec or give --numeric COL")
        return self


@dataclass
class IdfTask:
    shard: Path
    counts_path: Path
    column: str
    n_features: int
    stop_words: str | None


def idf_shard(task: IdfTask) -> tuple[int, np.ndarray, np.ndarray]:
    """Worker: hash one shard's texts, keep the counts on disk, return its document frequencies."""
    texts = pl.read_parquet(task.shard, columns=[task.column], hive_partitioning=False)[task.column]
    counts = text.hashed_counts(texts.to_list(), task.n_features, task.stop_words)
    text.save_counts(task.counts_path, counts)
    idx, df = text.document_frequency(counts)
    return counts.shape[0], idx, df


@dataclass
class Plan:
    """What the per-shard transform needs: the options and where the fitted models are."""

    options: Options
    models: Path
    counts: Path | None = None  # this shard's hashed counts from the IDF pass, if still on disk

    def fingerprint_dict(self) -> dict:
        return self.options.fingerprint_dict()


def _stop_words(options: Options) -> str | None:
    return None if options.stop_words == "none" else options.stop_words


def transform_shard(frame: pl.LazyFrame, plan: Plan) -> ShardOutput:
    """Worker: one shard's documents plus its vector columns (models read from plan.models)."""
    options, models = plan.options, plan.models
    meta = json.loads((models / META).read_text())
    df = frame.collect()
    added: list[pl.Series] = []
    texts = df[options.text_column].to_list() if options.tfidf or options.word2vec else []
    idf = np.load(models / IDF_FILE) if (models / IDF_FILE).exists() else None
    if options.tfidf:
        if plan.counts is not None and plan.counts.exists():
            counts = text.load_counts(plan.counts)  # hashed in the IDF pass: no second hashing
        else:
            counts = text.hashed_counts(texts, meta["n_features"], meta["stop_words"])
        x = text.tfidf(counts, idf, meta["sublinear_tf"])
        if meta.get("svd_components"):
            components = np.load(models / SVD_FILE)
            buckets = np.load(models / SVD_BUCKETS)
            added.append(vectors.dense_column("tfidf_svd", text.lsa(x, buckets, components)))
        if options.keep_sparse or not meta.get("svd_components"):
            added.extend(vectors.sparse_columns(x))
    if options.word2vec:
        from gensim.models import KeyedVectors

        kv = KeyedVectors.load(str(models / W2V_KV), mmap="r")
        weights = np.load(models / W2V_WEIGHTS)
        added.append(vectors.dense_column(
            "w2v", word2vec.document_vectors(texts, kv.index_to_key, kv.vectors, weights)))
    if options.numeric:
        columns, scaler = numeric.load_scaler(models / SCALER_FILE)
        added.extend(numeric.scaled_columns(df, columns, scaler))
    names = {s.name for s in added}
    out = df.drop([c for c in df.columns if c in names]).with_columns(added)
    return ShardOutput({"main": out})


def counts_path(work: Path, index: int) -> Path:
    return work / f"counts-{index:05d}.npz"


def svd_buckets(df: np.ndarray, idf: np.ndarray, limit: int) -> np.ndarray:
    """The buckets the SVD is fitted on, ascending: the `limit` with a non-zero IDF and the
    highest document frequency (ties to the lower bucket index, so the choice is deterministic)."""
    weighted = np.flatnonzero(idf > 0)
    if len(weighted) > limit:
        order = np.lexsort((weighted, -df[weighted]))
        weighted = np.sort(weighted[order[:limit]])
    return weighted


def fit(shards: list[Path], options: Options, models: Path, work: Path, engine: Engine) -> dict:
    """Fit every model the options ask for over all shards; save them in `models`; return meta."""
    models.mkdir(parents=True, exist_ok=True)
    stop_words = _stop_words(options)
    meta: dict = {"n_features": options.n_features, "stop_words": stop_words,
                  "sublinear_tf": options.sublinear_tf, "svd_components": 0}
    need_idf = options.tfidf or (options.word2vec and options.w2v_weighting == "tfidf")
    counts_paths = [counts_path(work, i) for i in range(len(shards))]
    idf = None
    if need_idf:
        tasks = [IdfTask(s, p, options.text_column, options.n_features, stop_words)
                 for s, p in zip(shards, counts_paths, strict=True)]
        df = np.zeros(options.n_features, dtype=np.int64)
        n_docs = 0
        # summed group by group: the driver never holds more than IDF_GROUP shards' frequencies
        for g in range(0, len(tasks), IDF_GROUP):
            group = tasks[g:g + IDF_GROUP]
            for rows, idx, counts in engine.map(idf_shard, group, labels=[str(t.shard) for t in group],
                                                desc="features-idf"):
                n_docs += rows
                df[idx] += counts
        idf = text.idf_weights(df, n_docs, options.min_df, options.max_df)
        np.save(models / IDF_FILE, idf)
        meta.update(n_docs=n_docs, buckets_used=int((df > 0).sum()), buckets_weighted=int((idf > 0).sum()))
    if options.tfidf and options.svd_components:
        buckets = svd_buckets(df, idf, options.svd_vocabulary)
        drop = 1 if options.svd_drop_first else 0
        k = max(1, min(options.svd_components + drop, meta["n_docs"] - 1, len(buckets)))
        drop = drop if k > 1 else 0

        def load(i: int):
            return text.tfidf(text.load_counts(counts_paths[i]), idf, options.sublinear_tf)[:, buckets]

        svd = engine.run_on_driver(lambda: text.randomized_svd_streaming(
            load, len(shards), len(buckets), k, options.svd_iterations, options.seed))
        components = np.ascontiguousarray(svd.components[:, drop:])
        np.save(models / SVD_FILE, components)
        np.save(models / SVD_BUCKETS, buckets)
        meta.update(svd_components=int(components.shape[1]), svd_buckets=int(len(buckets)),
                    svd_dropped_first=bool(drop),
                    singular_values=[round(float(v), 6) for v in svd.singular_values])
    if options.word2vec:
        model = engine.run_on_driver(lambda: word2vec.train(
            shards, options.text_column, options.w2v_size, options.w2v_window,
            options.w2v_min_count, options.w2v_epochs, options.w2v_workers, options.seed))
        model.save(str(models / W2V_FILE))
        model.wv.save(str(models / W2V_KV))
        weights = word2vec.word_weights(model.wv.index_to_key,
                                        idf if options.w2v_weighting == "tfidf" else None, stop_words)
        np.save(models / W2V_WEIGHTS, weights)
        meta.update(w2v_vocabulary=len(model.wv.index_to_key), w2v_size=options.w2v_size)
    if options.numeric:
        scaler = numeric.fit_scaler(shards, options.numeric, options.scaler)
        numeric.save_scaler(scaler, options.numeric, models / SCALER_FILE)
        meta.update(numeric=options.numeric, scaler=options.scaler)
    (models / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


def reuse(source: Path, options: Options, models: Path) -> dict:
    """Copy an earlier run's models into this output and check they cover the options."""
    if not (source / META).exists():
        raise JobError(f"--models {source}: no {META} there (expected an OUTPUT/_models folder)")
    if source.resolve() != models.resolve():
        shutil.copytree(source, models, dirs_exist_ok=True)
    meta = json.loads((models / META).read_text())
    need = {IDF_FILE: options.tfidf, SVD_FILE: options.tfidf and options.svd_components > 0,
            SVD_BUCKETS: options.tfidf and options.svd_components > 0, W2V_KV: options.word2vec, SCALER_FILE: bool(options.numeric)}
    missing = [name for name, wanted in need.items() if wanted and not (models / name).exists()]
    if missing:
        raise JobError(f"--models {source}: missing {missing} for the options given")
    if options.numeric and meta.get("numeric") != options.numeric:
        raise JobError(f"--models {source}: scaler was fitted on {meta.get('numeric')}, not {options.numeric}")
    return meta


class Features(Stage):
    """See the module docstring."""

    name = "features"
    Options = Options
    kinds = KINDS
    transform = staticmethod(transform_shard)

    def check(self, schema: dict, dataset: Path) -> None:
        """Fail before any work, naming the option, when a column the options need is missing."""
        options = self.options
        if options.tfidf or options.word2vec:
            require_columns(self.name, dataset, schema, [options.text_column],
                            hint="set --text-column (job file: features.text_column)")
        require_columns(self.name, dataset, schema, options.numeric, hint="check --numeric")
        for column in options.numeric:
            if not schema[column].is_numeric():
                raise wrong_type(self.name, column, dataset, schema[column], "a numeric type (--numeric)")

    def fit(self, run: StageRun) -> Plan:
        """Fit the models (or copy --models) into OUTPUT/_models; hashed counts stay in _work."""
        models, work = run.output / MODELS, run.output / WORK
        if self.options.models:
            reuse(Path(self.options.models), self.options, models)
            return Plan(self.options, models)
        fit(run.shards, self.options, models, work, run.engine)
        return Plan(self.options, models, counts=work)

    def plan_for_shard(self, plan: Plan, task: ShardTask) -> Plan:
        """Each shard reads back the counts the IDF pass hashed for it (no second hashing)."""
        if plan.counts is None:
            return plan
        return Plan(plan.options, plan.models, counts_path(plan.counts, task.index))

    def details(self, run: StageRun, records: list) -> dict:
        meta = json.loads((run.output / MODELS / META).read_text())
        return {"models": MODELS, **{k: meta[k] for k in ("n_docs", "svd_components", "buckets_weighted",
                                                          "w2v_vocabulary") if k in meta}}

    def cleanup(self, run: StageRun) -> None:
        shutil.rmtree(run.output / WORK, ignore_errors=True)


def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    return Features(options).run(inputs, output, engine, fresh=fresh)
