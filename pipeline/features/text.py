"""Hashing TF-IDF and its out-of-core truncated SVD (LSA): the per-shard steps and the fits.

The vocabulary is never built: tokens are hashed (scikit-learn's ``HashingVectorizer``,
MurmurHash3, seed 0, so the same token lands in the same bucket in every process and run) into
``n_features`` buckets. Fitting needs two kinds of global statistics, both small:

- IDF: the document frequency of every bucket, counted per shard on the workers and summed on
  the driver (``n_features`` integers), then ``idf = ln((1 + n) / (1 + df)) + 1`` (scikit-learn's
  smooth IDF); buckets with ``df < min_df`` or ``df > max_df * n`` get weight 0.
- SVD: a randomized range finder (Halko, Martinsson, Tropp 2011) run on the transposed matrix,
  streaming shards through the driver: ``Z = sum_s X_s^T G_s`` (random ``G_s``, seeded per
  shard), ``q`` power iterations ``Z = sum_s X_s^T (X_s Q)`` with ``Q = qr(Z)``, then the small
  Gram matrix ``C = sum_s (X_s Q)^T (X_s Q)`` whose eigenvectors rotate ``Q`` into the top
  right singular vectors ``V``. Only buckets with a non-zero IDF take part, and of those at
  most ``svd_vocabulary`` (10,000 by default), the ones with the highest document frequency,
  chosen after the IDF pass. Memory: ``Z`` (``buckets x (k + 10)`` float32) plus one shard,
  whatever the number of documents, and the same for 10,000 or 10 million documents once the
  corpus has more than ``svd_vocabulary`` weighted buckets. ``X V`` is uncentred LSA, i.e. what
  ``TruncatedSVD`` computes; by default the first singular vector (the direction every
  document shares, close to the mean document) is left out; rows are then L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""Tokens: runs of 2+ word characters, lower-cased (scikit-learn's default analyser)."""
OVERSAMPLE = 10


def hasher(n_features: int, stop_words: str | None) -> HashingVectorizer:
    """Token counts hashed into n_features buckets (no sign flipping, no normalisation)."""
    return HashingVectorizer(
        n_features=n_features, alternate_sign=False, norm=None, lowercase=True,
        token_pattern=TOKEN_PATTERN, stop_words=stop_words, dtype=np.float32,
    )


def hashed_counts(texts: list[str | None], n_features: int, stop_words: str | None) -> sp.csr_matrix:
    """(n_docs, n_features) token counts of a batch of texts; None counts as empty."""
    return hasher(n_features, stop_words).transform([t or "" for t in texts]).tocsr()


def document_frequency(counts: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Buckets present in the batch and in how many documents each: (indices, counts)."""
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    nonzero = np.flatnonzero(df)
    return nonzero.astype(np.int32), df[nonzero].astype(np.int32)


def idf_weights(df: np.ndarray, n_docs: int, min_df: int, max_df: float) -> np.ndarray:
    """Smooth IDF per bucket (float32), zero for buckets outside [min_df, max_df * n_docs]."""
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    keep = (df >= min_df) & (df <= max_df * max(n_docs, 1))
    return np.where(keep, idf, 0.0).astype(np.float32)


def tfidf(counts: sp.csr_matrix, idf: np.ndarray, sublinear_tf: bool) -> sp.csr_matrix:
    """Counts → L2-normalised TF-IDF rows (``1 + ln tf`` when sublinear)."""
    x = counts.astype(np.float32, copy=True).tocsr()
    if sublinear_tf:
        np.log(x.data, out=x.data)
        x.data += 1.0
    x = x @ sp.diags(idf)
    x = sp.csr_matrix(x)
    x.eliminate_zeros()
    return normalize(x, copy=False)


@dataclass
class SvdFit:
    """Result of the streaming SVD: V (n_features, k) float32 and the singular values."""

    components: np.ndarray
    singular_values: np.ndarray


def _orthonormal(z: np.ndarray) -> np.ndarray:
    """An orthonormal basis of z's columns (eigen-decomposition of the small Gram matrix, twice).

    float32 throughout except the (width x width) Gram matrix; directions with an eigenvalue
    below 1e-6 of the largest (singular values below 1e-3 of the largest: far outside the top
    components after the power iterations) are dropped, so a rank-deficient z (tiny corpora)
    gives fewer columns. Only (width x width) LAPACK work: fast where a tall QR is not.
    """
    q = np.asarray(z, dtype=np.float32)
    for _ in range(2):
        values, vectors = np.linalg.eigh((q.T @ q).astype(np.float64))
        keep = values > max(values.max(), 0.0) * 1e-6
        if not keep.any():
            return np.zeros((z.shape[0], 0), dtype=np.float32)
        q = q @ (vectors[:, keep] / np.sqrt(values[keep])).astype(np.float32)
    return q


def randomized_svd_streaming(
    load_shard,
    n_shards: int,
    n_features: int,
    n_components: int,
    n_iter: int,
    seed: int,
) -> SvdFit:
    """Top right singular vectors of the row-stacked matrix of all shards.

    load_shard(i) → the TF-IDF CSR matrix (n_i, n_features) of shard i (called 2 + n_iter times
    per shard, in order). Only one shard is in memory at a time. See the module docstring.
    """
    from threadpoolctl import threadpool_limits

    # the products are thin (width <= 1010 columns): one BLAS thread is as fast and does not
    # fight the Dask workers for the cores
    with threadpool_limits(limits=1, user_api="blas"):
        return _randomized_svd(load_shard, n_shards, n_features, n_components, n_iter, seed)


def _randomized_svd(load_shard, n_shards: int, n_features: int, n_components: int, n_iter: int,
                    seed: int) -> SvdFit:
    width = min(n_components + OVERSAMPLE, n_features)
    z = np.zeros((n_features, width), dtype=np.float32)
    for i in range(n_shards):
        x = load_shard(i)
        g = np.random.default_rng([seed, i]).standard_normal((x.shape[0], width), dtype=np.float32)
        z += np.asarray(x.T @ g)
    for _ in range(n_iter):
        q = _orthonormal(z)
        z = np.zeros_like(q)
        for i in range(n_shards):
            x = load_shard(i)
            z += np.asarray(x.T @ np.asarray(x @ q))
    q = _orthonormal(z)
    del z
    gram = np.zeros((q.shape[1], q.shape[1]), dtype=np.float64)
    for i in range(n_shards):
        xq = np.asarray(load_shard(i) @ q, dtype=np.float64)
        gram += xq.T @ xq
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][:n_components]
    rotated = q @ vectors[:, order].astype(np.float32)
    # fix each vector's sign (largest |entry| positive) so the fit is reproducible
    if rotated.shape[1]:
        signs = np.sign(rotated[np.abs(rotated).argmax(axis=0), np.arange(rotated.shape[1])])
        rotated *= np.where(signs == 0, 1.0, signs).astype(np.float32)
    return SvdFit(rotated, np.sqrt(np.clip(values[order], 0.0, None)))


def lsa(x: sp.csr_matrix, buckets: np.ndarray, components: np.ndarray) -> np.ndarray:
    """TF-IDF rows projected on the SVD components, L2-normalised: (n_docs, k) float32.

    buckets: the hashed columns the SVD was fitted on (those with a non-zero IDF);
    components: (len(buckets), k).
    """
    y = np.asarray(x[:, buckets] @ components, dtype=np.float32)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return y / np.where(norms > 0, norms, 1.0)


def save_counts(path: Path, counts: sp.csr_matrix) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    sp.save_npz(tmp, counts, compressed=False)
    tmp.replace(path)


def load_counts(path: Path) -> sp.csr_matrix:
    return sp.load_npz(path).tocsr()
