"""Exact quotas and cut points: the small, pure arithmetic the split driver does.

Every unit (a row, or a group of rows) has a place in a deterministic order inside its stratum:
``(_t, _h, _unit)``, where `_h` is xxHash64 of (seed, unit) and `_t` the time key (0 when not
splitting by time). A split is a list of *positions* per stratum (e.g. train ends at row 4,100);
a position becomes a *threshold*: the first unit whose midpoint lies at or after it. Units before
the first threshold are in segment 0, and so on. The driver never sees the units themselves, only
per-(stratum, sub-range) size histograms and the few units inside the sub-ranges that hold a
position (see `thresholds_from_candidates`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

SPLITS = ("train", "val", "test")
ORDER_COLUMNS = ("_t", "_h", "_unit")


def apportion(total: int, shares: Sequence[float]) -> list[int]:
    """Integers summing to `total`, each within one of `total * share` (largest remainder).

    Shares are normalised first. Ties in the remainder go to the earlier entry, so a class of
    one row with ratios 0.8/0.1/0.1 goes to train.
    """
    weight = sum(shares)
    if total <= 0 or weight <= 0:
        return [0] * len(shares)
    exact = [total * s / weight for s in shares]
    floors = [math.floor(x) for x in exact]
    left = total - sum(floors)
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return floors


@dataclass(frozen=True)
class Threshold:
    """The first unit at or after a position, or none (``unit is None``: +infinity).

    `start` is how many rows of the stratum come before that unit (the actual position).
    """

    t: int | float | None
    h: int | None
    unit: str | None
    start: int


def subranges_for(hist: pl.DataFrame, positions: Sequence[int]) -> list[int]:
    """The sub-ranges of one stratum whose units must be seen to place `positions` exactly.

    `hist` has one stratum's columns _sub, _size (non-empty sub-ranges only). A unit of size z
    ending at e has its midpoint e - z/2 < e, so every unit in a sub-range whose cumulative end is
    <= p lies before p: the threshold is in the first sub-range ending after p, or the next one.
    """
    rows = hist.sort("_sub")
    subs = rows["_sub"].to_numpy()
    ends = rows["_size"].cum_sum().to_numpy()
    wanted: set[int] = set()
    for p in positions:
        i = int(np.searchsorted(ends, p, side="right"))
        wanted.update(int(s) for s in subs[i:i + 2])
    return sorted(wanted)


def thresholds_from_candidates(
    hist: pl.DataFrame, candidates: pl.DataFrame, positions: Sequence[int]
) -> list[Threshold]:
    """Place each position of one stratum exactly, from its histogram and its boundary units.

    `candidates` holds every unit of the stratum (columns _sub, _t, _h, _unit, _size) in the
    sub-ranges `subranges_for` named. Returns one Threshold per position.
    """
    rows = hist.sort("_sub")
    before = dict(zip(rows["_sub"].to_list(),
                      (rows["_size"].cum_sum() - rows["_size"]).to_list(), strict=True))
    units = candidates.sort(["_sub", *ORDER_COLUMNS])
    # rows before each candidate: the sub-range's offset plus the sizes before it inside it
    units = units.with_columns(
        _start=pl.col("_sub").replace_strict(before, return_dtype=pl.Int64)
        + pl.col("_size").cum_sum().over("_sub") - pl.col("_size")
    )
    starts = units["_start"].to_list()
    sizes = units["_size"].to_list()
    total = int(rows["_size"].sum()) if rows.height else 0
    out = []
    for p in positions:
        found = None
        for i, (start, size) in enumerate(zip(starts, sizes, strict=True)):
            if 2 * start + size >= 2 * p:  # midpoint at or after p
                found = i
                break
        if found is None:
            out.append(Threshold(None, None, None, total))
        else:
            row = units.row(found, named=True)
            out.append(Threshold(row["_t"], row["_h"], row["_unit"], int(row["_start"])))
    return out


def balance_plan(
    train_rows: dict[str, int],
    mode: str,
    target: dict[str, float] | None = None,
    max_per_class: int | None = None,
) -> dict[str, int]:
    """Desired train rows per stratum after re-balancing.

    undersample: every class down to the smallest non-empty class; oversample: up to the
    largest; target: the train size shared out by `target` (largest remainder), then capped at
    `max_per_class`. A class with no train rows cannot be oversampled and stays at 0.
    """
    present = {k: v for k, v in train_rows.items() if v > 0}
    if mode == "none" or not present:
        desired = dict(train_rows)
    elif mode == "undersample":
        low = min(present.values())
        desired = {k: min(v, low) for k, v in train_rows.items()}
    elif mode == "oversample":
        high = max(present.values())
        desired = {k: (high if v > 0 else 0) for k, v in train_rows.items()}
    elif mode == "target":
        if target:
            names = sorted(train_rows)
            counts = apportion(sum(train_rows.values()), [target.get(k, 0.0) for k in names])
            desired = {k: (c if train_rows[k] > 0 else 0) for k, c in zip(names, counts, strict=True)}
        else:
            desired = dict(train_rows)
        if max_per_class is not None:
            desired = {k: min(v, max_per_class) for k, v in desired.items()}
    else:
        raise ValueError(f"unknown balance mode {mode!r}")
    return desired


def copies_for(have: int, want: int) -> tuple[int, int, int]:
    """(position, copies before it, copies after it) that turn `have` train rows into `want`.

    want <= have keeps the first `want` rows in stratum order (1 copy) and drops the rest (0);
    want > have gives every row want // have copies and the first want % have one more.
    """
    if have <= 0 or want == have:
        return have, 1, 0
    if want < have:
        return want, 1, 0
    base, extra = divmod(want, have)
    return extra, base + 1, base
