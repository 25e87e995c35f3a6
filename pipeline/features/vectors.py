"""Vector columns on disk and back: dense Array columns, sparse index/value lists, matrices.

Shared by features (writes them), cluster and label (read them). A dense vector column is a
Polars ``Array(Float32, d)``; the sparse hashed TF-IDF is two list columns, ``tfidf_idx``
(``List(UInt32)``) and ``tfidf_val`` (``List(Float32)``), over ``n_features`` hashed buckets.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

DENSE_PREFERENCE = ("tfidf_svd", "w2v")
"""Vector columns cluster/label use by default, in this order of preference (the first present)."""
SPARSE_INDEX, SPARSE_VALUE = "tfidf_idx", "tfidf_val"
SPARSE = "tfidf"  # the name that selects the sparse pair
SCALED_SUFFIX = "_scaled"


def dense_column(name: str, matrix: np.ndarray) -> pl.Series:
    """An (n, d) matrix as an Array(Float32, d) column."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pl.Series(name, matrix, dtype=pl.Array(pl.Float32, matrix.shape[1]))


def sparse_columns(matrix: sp.csr_matrix) -> list[pl.Series]:
    """A CSR matrix as two list columns (indices, values), one row per document."""
    import pyarrow as pa

    matrix = matrix.tocsr()
    matrix.sort_indices()
    offsets = pa.array(matrix.indptr.astype(np.int32))
    idx = pa.ListArray.from_arrays(offsets, pa.array(matrix.indices.astype(np.uint32)))
    val = pa.ListArray.from_arrays(offsets, pa.array(matrix.data.astype(np.float32)))
    return [pl.Series(SPARSE_INDEX, idx), pl.Series(SPARSE_VALUE, val)]


def sparse_matrix(frame: pl.DataFrame, n_features: int) -> sp.csr_matrix:
    """The sparse pair of columns of a frame as a CSR matrix (n, n_features)."""
    lengths = frame[SPARSE_INDEX].list.len().fill_null(0).to_numpy()
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = frame[SPARSE_INDEX].explode().drop_nulls().to_numpy().astype(np.int64)
    values = frame[SPARSE_VALUE].explode().drop_nulls().to_numpy().astype(np.float32)
    return sp.csr_matrix((values, indices, indptr), shape=(frame.height, n_features))


def available(schema: dict[str, pl.DataType]) -> list[str]:
    """Vector column names usable by cluster/label in a schema (SPARSE names the pair)."""
    names = [c for c in DENSE_PREFERENCE if c in schema]
    names += [c for c, t in schema.items() if c.endswith(SCALED_SUFFIX) and t.is_numeric()]
    if SPARSE_INDEX in schema and SPARSE_VALUE in schema:
        names.append(SPARSE)
    return names


def choose(schema: dict[str, pl.DataType], requested: list[str]) -> list[str]:
    """The vector columns to use: the requested ones (checked), or the default.

    Default: the first of ``tfidf_svd``, ``w2v`` present; else every ``*_scaled`` numeric
    column; else the sparse TF-IDF pair.
    """
    have = available(schema)
    if requested:
        missing = [c for c in requested if c not in have]
        if missing:
            raise ValueError(f"vector column(s) {missing} not in the input; it has {have or 'none'} "
                             "(run `pipeline features` first)")
        if SPARSE in requested and len(requested) > 1:
            raise ValueError("the sparse `tfidf` vectors cannot be combined with other columns")
        return list(requested)
    for name in DENSE_PREFERENCE:
        if name in have:
            return [name]
    scaled = [c for c in have if c.endswith(SCALED_SUFFIX)]
    if scaled:
        return scaled
    if SPARSE in have:
        return [SPARSE]
    raise ValueError(f"the input has no vector columns (looked for {list(DENSE_PREFERENCE)}, "
                     "*_scaled, tfidf_idx/tfidf_val); run `pipeline features` first")


def read_columns(columns: list[str]) -> list[str]:
    """Parquet columns to read for the chosen vector columns."""
    out: list[str] = []
    for c in columns:
        out += [SPARSE_INDEX, SPARSE_VALUE] if c == SPARSE else [c]
    return out


def matrix(frame: pl.DataFrame, columns: list[str], normalize: bool = True,
           n_features: int | None = None) -> np.ndarray | sp.csr_matrix:
    """The chosen vector columns of a frame as one (n, d) float32 matrix.

    Dense columns are concatenated (scalars count as one dimension); with ``normalize`` each
    row is scaled to unit L2 norm (zero rows stay zero), so Euclidean k-means is cosine k-means.
    """
    if columns == [SPARSE]:
        if n_features is None:
            n_features = int(frame[SPARSE_INDEX].explode().max() or 0) + 1
        x = sparse_matrix(frame, n_features)
        if normalize:
            from sklearn.preprocessing import normalize as l2

            x = l2(x, copy=False)
        return x
    parts = []
    for c in columns:
        col = frame[c]
        if isinstance(col.dtype, pl.Array):
            parts.append(col.to_numpy().astype(np.float32, copy=False).reshape(frame.height, -1))
        else:
            parts.append(col.cast(pl.Float32).fill_null(0.0).to_numpy().reshape(-1, 1))
    x = np.hstack(parts) if len(parts) > 1 else parts[0]
    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    return x.astype(np.float32, copy=False)
