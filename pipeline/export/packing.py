"""Sequence packing: records' token ids packed into sequences of at most N tokens, first-fit decreasing.

First-fit decreasing places records longest first, each into the first sequence with room. Items
of equal length fill the open sequences in order, so FFD is computed one distinct length at a
time with NumPy over all sequences (at most N distinct lengths), never one record at a time; the
result is the same as the item-by-item algorithm (a test checks it against a plain loop).
A packed row keeps its boundaries: `seq_lengths` (tokens of each record, in order) and
`record_ids`, so a trainer can reset positions and mask attention across records.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def first_fit_decreasing(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin of every item, placement order) for item lengths 1..capacity.

    Placement order: longest first, equal lengths in input order; within a bin the items sit in
    placement order. Bins are numbered in the order they are opened.
    """
    lengths = np.asarray(lengths, np.int64)
    if lengths.size and (lengths.min() < 1 or lengths.max() > capacity):
        raise ValueError(f"item lengths must be within 1..{capacity}")
    order = np.lexsort((np.arange(lengths.size), -lengths))
    if lengths.size == 0:
        return np.zeros(0, np.int64), order
    sorted_lengths = lengths[order]
    bins = np.empty(lengths.size, np.int64)
    remaining = np.zeros(0, np.int64)
    group_starts = np.flatnonzero(np.concatenate([[True], sorted_lengths[1:] != sorted_lengths[:-1]]))
    group_stops = [*group_starts[1:].tolist(), lengths.size]
    for start, stop in zip(group_starts, group_stops, strict=True):
        size = int(sorted_lengths[start])
        count = stop - start
        fits = remaining // size
        room = np.cumsum(fits)
        placed = int(min(count, room[-1])) if room.size else 0
        if placed:
            target = np.searchsorted(room, np.arange(placed), side="right")
            bins[order[start:start + placed]] = target
            remaining -= np.bincount(target, minlength=remaining.size) * size
        rest = count - placed
        if rest:
            per_bin = capacity // size
            opened = -(-rest // per_bin)
            target = remaining.size + np.arange(rest) // per_bin
            bins[order[start + placed:stop]] = target
            filled = np.bincount(target - remaining.size, minlength=opened) * size
            remaining = np.concatenate([remaining, capacity - filled])
    return bins, order


def first_fit_decreasing_reference(lengths: list[int], capacity: int) -> list[int]:
    """The textbook item-by-item FFD (for tests): bin of every item."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    remaining: list[int] = []
    bins = [0] * len(lengths)
    for i in order:
        for b, room in enumerate(remaining):
            if room >= lengths[i]:
                remaining[b] -= lengths[i]
                bins[i] = b
                break
        else:
            remaining.append(capacity - lengths[i])
            bins[i] = len(remaining) - 1
    return bins


def pack_sequences(token_ids: pa.ListArray, record_ids: pa.Array, capacity: int) -> pa.Table:
    """Pack records (token id lists, 1..capacity long) into sequences of at most capacity.

    Returns one row per sequence: `input_ids` (list<uint32>), `seq_lengths` (list<uint32>),
    `record_ids` (list<string>) and `n_tokens` (uint32), sequences in the order FFD opened them.
    """
    lengths = np.diff(token_ids.offsets.to_numpy()).astype(np.int64)
    values = token_ids.values.to_numpy(zero_copy_only=False).astype(np.uint32)
    bins, placement = first_fit_decreasing(lengths, capacity)
    # records sorted by (sequence, placement rank): the order of their tokens in the output
    rank = np.empty(lengths.size, np.int64)
    rank[placement] = np.arange(lengths.size)
    order = np.lexsort((rank, bins))
    starts = token_ids.offsets.to_numpy()[:-1].astype(np.int64)[order]
    ordered_lengths = lengths[order]
    ends = np.cumsum(ordered_lengths)
    gather = np.repeat(starts - (ends - ordered_lengths), ordered_lengths) + np.arange(int(ends[-1]) if ends.size else 0)
    per_bin_records = np.bincount(bins, minlength=int(bins.max()) + 1 if bins.size else 0)
    per_bin_tokens = np.bincount(bins, weights=lengths, minlength=per_bin_records.size).astype(np.int64)
    token_offsets = pa.array(np.concatenate([[0], np.cumsum(per_bin_tokens)]).astype(np.int32))
    record_offsets = pa.array(np.concatenate([[0], np.cumsum(per_bin_records)]).astype(np.int32))
    return pa.table({
        "input_ids": pa.ListArray.from_arrays(token_offsets, pa.array(values[gather], pa.uint32())),
        "seq_lengths": pa.ListArray.from_arrays(record_offsets, pa.array(ordered_lengths.astype(np.uint32), pa.uint32())),
        "record_ids": pa.ListArray.from_arrays(record_offsets, record_ids.take(pa.array(order)).cast(pa.string())),
        "n_tokens": pa.array(per_bin_tokens.astype(np.uint32), pa.uint32()),
    })
