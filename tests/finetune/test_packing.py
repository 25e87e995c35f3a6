"""Packing: first-fit decreasing equals the textbook loop; no sequence over N; every token once."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.export import Options, pack_frame
from pipeline.export.packing import (
    first_fit_decreasing,
    first_fit_decreasing_reference,
    pack_sequences,
)
from pipeline.tokens import count_tokens


def test_vectorised_ffd_equals_the_item_by_item_algorithm():
    rng = np.random.default_rng(7)
    for _ in range(300):
        capacity = int(rng.integers(1, 64))
        lengths = rng.integers(1, capacity + 1, int(rng.integers(0, 80)))
        bins, _ = first_fit_decreasing(lengths, capacity)
        assert bins.tolist() == first_fit_decreasing_reference(lengths.tolist(), capacity)


def test_no_sequence_over_capacity_and_every_token_placed_once():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 200, 500)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    values = np.arange(starts[-1], dtype=np.uint32)  # token i of the corpus has id i: traceable
    lists = pa.ListArray.from_arrays(pa.array(starts.astype(np.int32)), pa.array(values))
    ids = pa.array([f"r{i}" for i in range(lengths.size)])
    packed = pack_sequences(lists, ids, 256)
    sequences = packed["input_ids"].to_pylist()
    assert max(len(s) for s in sequences) <= 256
    placed = np.concatenate([np.asarray(s) for s in sequences])
    assert np.array_equal(np.sort(placed), values)  # each token exactly once
    # boundaries: each sequence's records, in order, are whole and contiguous
    for seq, seq_lengths, record_ids in zip(sequences, packed["seq_lengths"].to_pylist(), packed["record_ids"].to_pylist(), strict=True):
        assert sum(seq_lengths) == len(seq)
        offset = 0
        for n, record in zip(seq_lengths, record_ids, strict=True):
            i = int(record[1:])
            assert seq[offset:offset + n] == list(range(starts[i], starts[i + 1]))
            offset += n
    assert packed["n_tokens"].to_pylist() == [len(s) for s in sequences]
    # FFD leaves little room: fewer sequences than 1.1 x the lower bound
    assert packed.num_rows <= int(np.ceil(lengths.sum() / 256) * 1.1)


def test_pack_frame_on_real_records(gsm8k):
    records = gsm8k.head(300).with_columns(pl.lit("instruction").alias("kind"))
    packed, rejected, counts = pack_frame(records, Options(pack=512, eos_token="<|endoftext|>"))
    expected = count_tokens(pl.Series([f"{p}\n\n{r}" for p, r in zip(records["prompt"], records["response"], strict=True)]), "gpt2") + 1
    assert rejected.height == 0
    assert counts["tokens"] == int(expected.sum())
    assert sorted(x for xs in packed["seq_lengths"].to_pylist() for x in xs) == sorted(expected.tolist())
    assert sorted(x for xs in packed["record_ids"].to_pylist() for x in xs) == sorted(records["id"].to_list())
    assert max(packed["n_tokens"].to_pylist()) <= 512
    ends = [seq[sum(lengths[:k + 1]) - 1] for seq, lengths in zip(packed["input_ids"].to_pylist(), packed["seq_lengths"].to_pylist(), strict=True) for k in range(len(lengths))]
    assert set(ends) == {50256}  # every record ends with <|endoftext|>
    assert counts["padding_packed"] == packed.num_rows * 512 - counts["tokens"]
    assert counts["padding_unpacked"] == 300 * 512 - counts["tokens"]


def test_overlong_records_are_dropped_or_split(gsm8k):
    records = gsm8k.head(40).with_columns(pl.lit("instruction").alias("kind"))
    lengths = count_tokens(pl.Series([f"{p}\n\n{r}" for p, r in zip(records["prompt"], records["response"], strict=True)]), "gpt2")
    capacity = 128
    packed, rejected, counts = pack_frame(records, Options(pack=capacity))
    assert rejected["reason"].to_list() == ["longer_than_pack"] * int((lengths > capacity).sum())
    assert counts["records"] == int((lengths <= capacity).sum())
    packed, rejected, counts = pack_frame(records, Options(pack=capacity, overlong="split"))
    assert rejected.height == 0
    assert counts["tokens"] == int(lengths.sum())  # every token placed
    assert counts["pieces"] == int(np.ceil(lengths / capacity).sum())
    assert max(packed["n_tokens"].to_pylist()) <= capacity
