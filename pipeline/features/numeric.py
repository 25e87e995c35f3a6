"""Scaled numeric columns: a dask-ml scaler fitted across all shards, saved, reused on new data.

The fit reads only the chosen columns of every shard as one Dask array (rows with a null in
any of them are left out of the fit) and runs on the engine's Dask cluster when there is one.
The fitted scaler is pickled to ``_models/scaler.pkl``; the per-shard transform is NumPy on the
workers and writes ``<column>_scaled`` (Float64; null stays null).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import polars as pl

SCALERS = ("standard", "minmax", "robust")


def fit_scaler(shards: list[Path], columns: list[str], kind: str):
    """Fit a dask-ml StandardScaler / MinMaxScaler / RobustScaler over every shard's columns."""
    import dask.dataframe as dd
    from dask_ml.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    frame = dd.read_parquet([str(s) for s in shards], columns=columns).dropna()
    # a Dask array (not the dataframe): dask-ml's RobustScaler fails on dataframes with NumPy 2
    array = frame.astype("float64").to_dask_array().compute_chunk_sizes()
    scaler = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}[kind]()
    scaler.fit(array)
    return scaler


def save_scaler(scaler, columns: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"columns": columns, "scaler": scaler}))


def load_scaler(path: Path):
    data = pickle.loads(path.read_bytes())
    return data["columns"], data["scaler"]


def scaled_columns(frame: pl.DataFrame, columns: list[str], scaler) -> list[pl.Series]:
    """``<column>_scaled`` series for a shard (nulls kept as nulls)."""
    values = frame.select(pl.col(c).cast(pl.Float64) for c in columns).to_numpy()
    missing = np.isnan(values)
    scaled = np.asarray(scaler.transform(np.where(missing, 0.0, values)), dtype=np.float64)
    out = []
    for j, c in enumerate(columns):
        s = pl.Series(f"{c}_scaled", scaled[:, j])
        out.append(s.scatter(np.flatnonzero(missing[:, j]), None) if missing[:, j].any() else s)
    return out
