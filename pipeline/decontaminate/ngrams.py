"""Normalised word n-gram hashes of many texts at once, and their lookup in a sorted hash set.

Normalisation (the same for train rows and eval sets, documented in docs/stages/decontaminate.md):
NFKC (only for texts with a non-ASCII character: it is the identity on ASCII), lower case, then
the tokens are the ``\\w+`` runs (Unicode letters, digits, underscore). Everything else (spaces,
tabs, line breaks, punctuation, symbols) only separates tokens, so "Janet's  ducks,\\nlay" and
"JANET S DUCKS LAY" have the same tokens. With `zero_numbers` (option `numbers = "zero"`), every
number becomes "0" first, as datatrove's normalisation does: problems that differ only in their
numbers then match.

Hashes (uint64, the same on every machine): each token is hashed with xxHash64 (seed 0,
polars-hash); the n-gram starting at token i of a text is
``splitmix64(sum_j t[i+j] * P**j + n * C)`` (mod 2**64), computed for every position at once from
one prefix sum over the batch (``P`` is odd, so ``P**-i`` exists mod 2**64 and a window's sum is
``(S[i+n] - S[i]) * P**-i``). A text with fewer than n tokens (but at least one) gets one hash
of all its tokens, the same formula with its own length: it can only match a text with exactly
the same tokens (the "whole-text" rule for short texts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.dedup.minhash import splitmix64
from pipeline.hashing import xxhash64

TOKEN_PATTERN = r"\w+"
NUMBER_PATTERN = r"\d+([.,]\d+)?"  # a number as datatrove's text normalisation sees one
_P = 0x9E3779B97F4A7C15  # odd: invertible mod 2**64
_P_INV = pow(_P, -1, 2**64)
_LENGTH_SALT = np.uint64(0xC2B2AE3D27D4EB4F)  # keeps windows of different lengths apart
BATCH_BYTES = 4_000_000  # text bytes tokenised at once: ~0.8M words; about 140 MB of word and window arrays


def normalised_tokens(texts: pl.Series, zero_numbers: bool = False) -> pl.Series:
    """Per text, its list of normalised tokens (see the module docstring); null → empty list.
    `zero_numbers`: every number (digits, optionally a decimal part) becomes the token "0"."""
    frame = pl.DataFrame({"t": texts.cast(pl.String).fill_null("")})
    wide = pl.col("t").str.contains(r"[^\x00-\x7F]")
    text = pl.when(wide).then(pl.col("t").str.normalize("NFKC")).otherwise(pl.col("t")).str.to_lowercase()
    if zero_numbers:
        text = text.str.replace_all(NUMBER_PATTERN, "0")
    return frame.select(text.str.extract_all(TOKEN_PATTERN).alias("tokens"))["tokens"]


def _powers(base: int, count: int) -> np.ndarray:
    """base**0 .. base**(count-1) mod 2**64."""
    out = np.full(count, np.uint64(base), dtype=np.uint64)
    if count:
        out[0] = np.uint64(1)
    with np.errstate(over="ignore"):
        return np.cumprod(out, dtype=np.uint64)


@dataclass
class Windows:
    """The hashed windows of a batch of texts.

    hashes: uint64 [windows]; unit: int64 [windows], the text (batch row) of each window;
    start: int64 [windows], the window's first token in `tokens`; length: int64 [windows];
    tokens: the batch's tokens, all texts concatenated in order (for showing a window).
    """

    hashes: np.ndarray
    unit: np.ndarray
    start: np.ndarray
    length: np.ndarray
    tokens: pl.Series

    def text_of(self, index: np.ndarray) -> list[str]:
        """The normalised text ("tok tok tok") of the windows at `index` (a few, not all)."""
        if len(index) == 0:
            return []
        lengths = self.length[index]
        owner = np.repeat(np.arange(len(index)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        positions = np.repeat(self.start[index], lengths) + offsets
        frame = pl.DataFrame({"w": owner, "t": self.tokens.gather(positions)})
        joined = frame.group_by("w", maintain_order=True).agg(pl.col("t").str.join(" "))
        return joined["t"].to_list()


def windows(texts: pl.Series, n: int, zero_numbers: bool = False) -> Windows:
    """Every n-gram of every text, and one whole-text window for each text of 1..n-1 tokens."""
    token_lists = normalised_tokens(texts, zero_numbers)
    counts = token_lists.list.len().cast(pl.Int64).to_numpy()
    tokens = token_lists.explode().drop_nulls()
    hashed = pl.DataFrame({"t": tokens}).select(xxhash64("t"))["t"].to_numpy().astype(np.uint64)
    total = len(hashed)
    first = np.cumsum(counts) - counts  # each text's first token
    unit_of_token = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    position = np.arange(total, dtype=np.int64) - first[unit_of_token]
    long_start = np.flatnonzero(position <= counts[unit_of_token] - n)
    short_units = np.flatnonzero((counts > 0) & (counts < n))
    start = np.concatenate([long_start, first[short_units]])
    length = np.concatenate([np.full(len(long_start), n, dtype=np.int64), counts[short_units]])
    unit = np.concatenate([unit_of_token[long_start], short_units])
    order = np.argsort(start, kind="stable")
    start, length, unit = start[order], length[order], unit[order]
    with np.errstate(over="ignore"):
        weighted = hashed * _powers(_P, total)
        prefix = np.concatenate([np.zeros(1, np.uint64), np.cumsum(weighted, dtype=np.uint64)])
        raw = (prefix[start + length] - prefix[start]) * _powers(_P_INV, total + 1)[start]
        keys = splitmix64(raw + length.astype(np.uint64) * _LENGTH_SALT)
    return Windows(keys, unit, start, length, tokens)


def batches(byte_lengths: np.ndarray, max_bytes: int = BATCH_BYTES) -> list[tuple[int, int]]:
    """(start, end) row ranges holding at most `max_bytes` of text each (at least one row)."""
    ends = np.cumsum(byte_lengths, dtype=np.int64)
    out, start = [], 0
    while start < len(byte_lengths):
        base = ends[start - 1] if start else 0
        end = max(int(np.searchsorted(ends, base + max_bytes, side="right")), start + 1)
        out.append((start, end))
        start = end
    return out


def contains(sorted_set: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Boolean mask: which keys are in `sorted_set` (sorted uint64, e.g. a memory-mapped .npy)."""
    if len(sorted_set) == 0 or len(keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    # sorted queries walk the set in order (page-friendly when it is memory-mapped)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    index = np.searchsorted(sorted_set, ordered)
    found = np.zeros(len(keys), dtype=bool)
    inside = index < len(sorted_set)
    found_ordered = np.zeros(len(keys), dtype=bool)
    found_ordered[inside] = np.asarray(sorted_set[index[inside]]) == ordered[inside]
    found[order] = found_ordered
    return found
