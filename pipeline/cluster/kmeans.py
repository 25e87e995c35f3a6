"""K-means over the shards: K chosen on a sample, k-means++ on a sample, Lloyd (or MiniBatch) passes.

The fit never holds more than one shard plus a bounded sample:

1. sample: every shard keeps the rows whose xxHash64(id:seed) falls below a threshold (about
   ``sample_size`` rows overall, the same rows in every run), on the workers; the driver puts
   them in hash order, so the sample does not depend on how rows were sharded;
2. K (``--k auto``): scikit-learn ``KMeans`` for each candidate K on the sample; by default the
   K at the knee of the inertia curve (Kneedle, from the ``kneed`` library), or (``--k-criterion
   silhouette``) the highest silhouette, ties to the smaller K. The range grows with the sample
   (``default_k_max``);
3. init: k-means++ ``KMeans`` on the sample gives the starting centres;
4. optional (``passes`` > 0, off by default): ``MiniBatchKMeans.partial_fit`` over every shard
   in order, in batches of ``batch_size`` rows shuffled with a seeded generator;
5. ``refine_lloyd``: full-batch Lloyd passes, each one map over the shards returning per-cluster
   sums and counts (independent of the shards' order, unlike step 4).

On the Dask engine step 4 runs through dask-ml's ``Incremental`` wrapper (``fit_incremental``):
each shard is a Dask array block loaded (and row-shuffled) on a worker, split into
``batch_size``-row chunks, and ``Incremental.partial_fit`` chains ``MiniBatchKMeans.partial_fit``
over the chunks in order (``shuffle_blocks=False``: the order is ours, seeded). The shards go
in windows of ``WINDOW`` shards, one ``Incremental.partial_fit`` call per window: a Dask array
over all shards would let the scheduler load every shard ahead of the sequential chain and hold
them all in the cluster's memory, a window bounds that to ``WINDOW`` shards. The chunks and
their order are the ones of the in-process loop (``fit_minibatch``), so both give the same
centres. Sparse vectors (``--vectors tfidf``) always use the in-process loop.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score

from pipeline.engine import Engine
from pipeline.errors import EmptyResultError
from pipeline.features import vectors
from pipeline.hashing import xxhash64

SAMPLE_BUCKETS = 1 << 32
WINDOW = 8
"""Shards per dask-ml ``Incremental.partial_fit`` call (their vectors in cluster memory at once)."""
REFINE_GROUP = 64
"""Shards per engine.map call of a Lloyd pass (their k x d sums on the driver at once)."""
K_MAX_CAP = 50
"""Largest K --k auto tries by default, whatever the sample size (cost: one KMeans fit per K)."""
K_CRITERIA = ("elbow", "silhouette")
K_SCAN_STARTS = 3
"""k-means++ starts per K when --k auto scans the range (the best kept): one start left the
inertia curve, and so its knee, at the mercy of single bad starts."""


def sample_key(seed: int) -> pl.Expr:
    """xxHash64 of `id` and the seed: decides which rows are sampled, and their order."""
    return xxhash64(pl.concat_str(pl.col("id").cast(pl.String).fill_null(""), pl.lit(f":{seed}")))


def sample_expr(seed: int, fraction: float) -> pl.Expr:
    """True for the rows in the deterministic sample (by xxHash64 of `id` and the seed)."""
    return (sample_key(seed) % SAMPLE_BUCKETS) < int(fraction * SAMPLE_BUCKETS)


@dataclass
class VectorSpec:
    """Which columns make the vectors and how (shared by every pass)."""

    columns: list[str]
    normalize: bool
    n_features: int | None  # the sparse TF-IDF's width

    def read(self, shard: Path, extra: list[str] = ()) -> pl.DataFrame:
        return pl.read_parquet(shard, columns=[*extra, *vectors.read_columns(self.columns)],
                               hive_partitioning=False)

    def matrix(self, frame: pl.DataFrame):
        return vectors.matrix(frame, self.columns, self.normalize, self.n_features)


@dataclass
class SampleTask:
    shard: Path
    spec: VectorSpec
    fraction: float
    seed: int


def sample_shard(task: SampleTask):
    """Worker: the sampled rows' sample keys (uint64) and vectors, of one shard."""
    frame = task.spec.read(task.shard, ["id"]).filter(sample_expr(task.seed, task.fraction))
    return frame.select(sample_key(task.seed))[:, 0].to_numpy(), task.spec.matrix(frame)


def stack_sample(parts: list):
    """The sampled vectors of every shard in the order of their sample keys, not of the shards:
    the k-means++ seeding (and so the clusters) then does not depend on how rows were sharded."""
    keys = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.uint64)
    x = stack([p[1] for p in parts])
    return x[np.argsort(keys, kind="stable")]


def stack(parts: list) -> np.ndarray | sp.csr_matrix:
    parts = [p for p in parts if p.shape[0]]
    if not parts:
        raise EmptyResultError("cluster: the input has no rows to cluster")
    if sp.issparse(parts[0]):
        return sp.vstack(parts).tocsr()
    return np.vstack(parts)


def default_k_max(sample_rows: int, k_min: int = 2) -> int:
    """The top of the K range tried by --k auto when --k-max is not given: sqrt(rows / 2) (the
    usual rule of thumb), at most K_MAX_CAP, at least k_min. A fixed 12 could not reach the 29
    Sections of the Debian corpus; the elbow needs the range to reach past the true K."""
    return max(k_min, min(K_MAX_CAP, int(math.sqrt(sample_rows / 2))))


def choose_k(sample, k_min: int, k_max: int, seed: int,
             criterion: str = "elbow") -> tuple[int, dict[int, float]]:
    """K in [k_min, k_max] for the sample by `criterion`, and every K's score.

    One ``KMeans`` (K_SCAN_STARTS k-means++ starts) per K on the sample. "elbow": the scores are the inertia
    (sum of squared distances to the nearest centre) and K is the knee of that decreasing convex
    curve, found by Kneedle (``kneed.KneeLocator``, the first knee); a curve with no knee (or
    under three points) gives k_min. "silhouette": the scores are the silhouette (on at most
    2,000 rows) and the highest wins, ties to the smaller K; on LSA vectors it keeps rising with
    K and so picks the top of the range (docs/stages/cluster.md).
    """
    if criterion not in K_CRITERIA:
        raise ValueError(f"k criterion must be one of {K_CRITERIA}, not {criterion!r}")
    n = sample.shape[0]
    scores: dict[int, float] = {}
    for k in range(k_min, min(k_max, n - 1) + 1):
        model = KMeans(n_clusters=k, n_init=K_SCAN_STARTS, random_state=seed).fit(sample)
        if criterion == "elbow":
            scores[k] = round(float(model.inertia_), 6)
        elif len(np.unique(model.labels_)) > 1:
            scores[k] = round(float(silhouette_score(sample, model.labels_, sample_size=min(n, 2000),
                                                     random_state=seed)), 6)
    if not scores:
        return min(k_min, max(1, n)), scores
    if criterion == "elbow":
        return elbow(scores, k_min), scores
    best = max(scores.values())
    return min(k for k, s in scores.items() if s == best), scores


def elbow(inertia_by_k: dict[int, float], fallback: int) -> int:
    """The knee of a decreasing convex inertia curve (Kneedle), or `fallback` if it has none."""
    if len(inertia_by_k) < 3:
        return fallback
    from kneed import KneeLocator

    ks = sorted(inertia_by_k)
    with warnings.catch_warnings():  # "no knee found": answered by the fallback
        warnings.simplefilter("ignore")
        knee = KneeLocator(ks, [inertia_by_k[k] for k in ks], curve="convex", direction="decreasing").knee
    return fallback if knee is None else int(knee)


def initial_centres(sample, k: int, seed: int) -> np.ndarray:
    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(sample)
    return np.asarray(model.cluster_centers_, dtype=np.float64)


def minibatch_model(centres: np.ndarray, batch_size: int, seed: int) -> MiniBatchKMeans:
    return MiniBatchKMeans(n_clusters=centres.shape[0], init=centres, n_init=1,
                           batch_size=batch_size, random_state=seed, compute_labels=False)


def shuffled_shard(shard: Path, spec: VectorSpec, seed: int, p: int, i: int):
    """One shard's vectors, rows in the seeded order of pass p (worker or driver)."""
    x = spec.matrix(spec.read(shard))
    return x[np.random.default_rng([seed, p, i]).permutation(x.shape[0])]


def fit_minibatch(shards: list[Path], spec: VectorSpec, centres: np.ndarray, batch_size: int,
                  passes: int, seed: int) -> MiniBatchKMeans:
    """partial_fit over every shard (one in memory), `passes` times, from the given centres."""
    model = minibatch_model(centres, batch_size, seed)
    for p in range(passes):
        for i, shard in enumerate(shards):
            x = shuffled_shard(shard, spec, seed, p, i)
            for start in range(0, x.shape[0], batch_size):
                model.partial_fit(x[start:start + batch_size])
    return model


def fit_incremental(shards: list[Path], rows: list[int], dims: int, spec: VectorSpec,
                    centres: np.ndarray, batch_size: int, passes: int, seed: int,
                    engine: Engine) -> MiniBatchKMeans:
    """The same fit as fit_minibatch through dask-ml ``Incremental`` on the engine's Dask client.

    rows: rows per shard (empty shards are skipped); dims: the width of the vectors. dask-ml
    computes each window itself; ``engine.watching`` makes that fail like a map does (a failing
    task, no worker alive, every worker paused) instead of waiting forever.
    """
    import dask
    import dask.array as da
    from dask_ml.wrappers import Incremental

    model = Incremental(minibatch_model(centres, batch_size, seed), shuffle_blocks=False)
    load = dask.delayed(shuffled_shard, pure=True)
    work = [(i, shard, n) for i, (shard, n) in enumerate(zip(shards, rows, strict=True)) if n]
    for p in range(passes):
        for w in range(0, len(work), WINDOW):
            blocks = [da.from_delayed(load(shard, spec, seed, p, i), shape=(n, dims), dtype=np.float32)
                      .rechunk((batch_size, dims)) for i, shard, n in work[w:w + WINDOW]]
            with engine.watching("cluster-fit"):
                model.partial_fit(da.concatenate(blocks, axis=0))
    return model.estimator_


@dataclass
class LloydTask:
    shard: Path
    spec: VectorSpec
    centres: np.ndarray  # k x d, float64: small, shipped with every task of a pass


def lloyd_shard(task: LloydTask) -> tuple[np.ndarray, np.ndarray, float]:
    """Worker: one shard's per-cluster vector sums (k x d), row counts (k) and squared distances."""
    x = task.spec.matrix(task.spec.read(task.shard))
    k, d = task.centres.shape
    if x.shape[0] == 0:
        return np.zeros((k, d)), np.zeros(k, np.int64), 0.0
    nearest, dist = assign(x, task.centres)
    onehot = sp.csr_matrix((np.ones(len(nearest)), (nearest, np.arange(len(nearest)))), shape=(k, len(nearest)))
    sums = onehot @ x
    sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums, dtype=np.float64)
    return sums, np.bincount(nearest, minlength=k), float(np.square(dist, dtype=np.float64).sum())


def refine_lloyd(shards: list[Path], spec: VectorSpec, centres: np.ndarray, max_passes: int,
                 tol: float, engine: Engine) -> tuple[np.ndarray, list[float]]:
    """Full-batch Lloyd passes over every shard from the given centres (out-of-core: each pass is
    one map returning per-cluster sums and counts, the driver holds k x d numbers).

    Unlike mini-batch updates, a pass does not depend on the order of the shards, so a dataset
    stored topic by topic (one file per class, a common layout) clusters as well as a shuffled
    one. Stops after `max_passes` or when the centres move less than `tol` (relative Frobenius
    norm); a cluster that empties keeps its centre. Returns the centres and the inertia (sum of
    squared distances to the nearest centre) seen by each pass.
    """
    centres = np.asarray(centres, dtype=np.float64)
    inertia: list[float] = []
    for p in range(max_passes):
        sums, counts, sq = np.zeros_like(centres), np.zeros(len(centres), np.int64), 0.0
        for g in range(0, len(shards), REFINE_GROUP):  # summed group by group: flat driver memory
            group = shards[g:g + REFINE_GROUP]
            for part in engine.map(lloyd_shard, [LloydTask(s, spec, centres) for s in group],
                                   labels=[str(s) for s in group], desc=f"cluster-refine {p + 1}"):
                sums += part[0]
                counts += part[1]
                sq += part[2]
        inertia.append(round(sq, 6))
        moved = centres.copy()
        filled = counts > 0
        moved[filled] = sums[filled] / counts[filled, None]
        shift = np.linalg.norm(moved - centres) / max(np.linalg.norm(centres), 1e-12)
        centres = moved
        if shift < tol:
            break
    return centres, inertia


def assign(x, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre and Euclidean distance to it for every row: (int32, float32)."""
    if sp.issparse(x):
        row_sq = np.asarray(x.multiply(x).sum(axis=1)).ravel()
    else:
        row_sq = np.einsum("ij,ij->i", x, x)
    cross = np.asarray(x @ centres.T)
    d2 = row_sq[:, None] - 2.0 * cross + np.einsum("ij,ij->i", centres, centres)[None, :]
    nearest = np.argmin(d2, axis=1)
    dist = np.sqrt(np.clip(d2[np.arange(len(nearest)), nearest], 0.0, None))
    return nearest.astype(np.int32), dist.astype(np.float32)
