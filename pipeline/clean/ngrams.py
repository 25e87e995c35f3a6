"""Word n-gram repetition measurements of the Gopher rules, over a whole column at once.

`ngram_stats(texts, top, dup)` returns, per row, the characters of its tokens and, for each
requested size n, the characters covered by the most frequent word n-gram (`top_{n}gram_chars`)
and the characters of the tokens covered by a repeated n-gram (`dup_{n}gram_chars`).

Long format, no per-row Python: the tokens of every row are exploded into one frame (row, 64-bit
in-memory hash, length) in row order; an n-gram key at token i combines the hashes of tokens
i..i+n-1 (shifts over the whole frame; the n-gram is valid when token i+n-1 is in the same row).
Per-row grouping (`over(row)`) finds repeated keys. Two facts keep the larger sizes cheap:

- an (n+1)-gram can only repeat where its leading n-gram repeats, so size n+1 is computed only on
  the positions whose n-gram occurs twice or more in its row (usually a small share);
- the most frequent n-gram of a row is one of those repeated ones, or, if none repeats, the
  row's first n-gram (count 1, the first one seen wins a tie as in `Counter.most_common`).

*Covered* tokens (dup rule): a token is covered when it lies inside some occurrence of an n-gram
that is not that n-gram's first occurrence in the row; with a difference array over the starts of
such occurrences, covered = running sum > 0. Rows are processed in batches of at most
`BATCH_CHARS` bytes of text, so the long frame stays bounded. The hashes are never stored.
"""

from __future__ import annotations

import numpy as np
import polars as pl

K = np.uint64(1_000_003)
BATCH_CHARS = 32_000_000  # bytes of text per batch (the long frame holds a few tens of bytes per token)


def stat_names(top: tuple[int, ...], dup: tuple[int, ...]) -> list[str]:
    return ["token_chars", *(f"top_{n}gram_chars" for n in top), *(f"dup_{n}gram_chars" for n in dup)]


def _tokens(texts: pl.Series) -> pl.DataFrame:
    """One row per token: `r` (row of the text), `h` (hash), `l` (characters), in text order.
    Tokens are the runs of non-whitespace (`\\S+`): line breaks become spaces and the text is
    split on spaces (the regex replacement only for the few rows with other whitespace)."""
    spaced = texts.str.replace_all("\n", " ", literal=True)
    other = texts.str.contains(r"[^\S \n]").fill_null(False)
    if other.any():
        rows = other.arg_true()
        spaced = spaced.scatter(rows, texts.gather(rows).str.replace_all(r"\s", " "))
    frame = pl.DataFrame({"t": spaced.str.split(" ")}).with_row_index("r").explode("t", keep_nulls=False)
    frame = frame.filter(pl.col("t") != "")
    return frame.select(pl.col("r").cast(pl.Int64), pl.col("t").hash().alias("h"), pl.col("t").str.len_chars().cast(pl.Int64).alias("l"))


def _per_row(r: np.ndarray, keys: np.ndarray, expr: pl.Expr) -> np.ndarray:
    """`expr` over `keys` within each row (a boolean per position)."""
    if not len(r):
        return np.zeros(0, dtype=bool)
    return pl.DataFrame({"r": r, "g": keys}).select(expr.over("r")).to_series().to_numpy()


def _batch(texts: pl.Series, top: tuple[int, ...], dup: tuple[int, ...]) -> dict[str, np.ndarray]:
    rows = len(texts)
    tokens = _tokens(texts)
    r, h, ln = (tokens[c].to_numpy() for c in ("r", "h", "l"))
    total = len(r)
    counts = np.bincount(r, minlength=rows)
    first = np.cumsum(counts) - counts  # index of each row's first token
    prefix = np.concatenate([[0], np.cumsum(ln)])  # characters of tokens [0, i)
    out = {"token_chars": prefix[first + counts] - prefix[first]}
    # the candidate positions of size n (those whose (n-1)-gram repeats in its row; all for
    # n = 2) and, at each, the key and character length (spaces included) of its (n-1)-gram
    idx, gram, length = np.arange(total), h, ln
    for n in range(2, max((*top, *dup), default=1) + 1):
        last = idx + n - 1  # the n-gram's last token
        inside = last < total
        inside[inside] = r[last[inside]] == r[idx[inside]]
        idx, gram, length, last = idx[inside], gram[inside], length[inside], last[inside]
        gram = (gram * K) ^ h[last]
        length = length + ln[last] + 1
        if n in dup:
            starts = idx[~_per_row(r[idx], gram, pl.col("g").is_first_distinct())]
            # characters of the union of the windows [s, s + n): each adds the tokens not
            # already in the previous window (same width, starts sorted, windows stay in a row)
            previous_end = np.concatenate([[0], starts[:-1] + n])
            begin = np.maximum(starts, previous_end)
            added = prefix[starts + n] - prefix[np.minimum(begin, starts + n)]
            out[f"dup_{n}gram_chars"] = np.bincount(r[starts], weights=added, minlength=rows).astype(np.int64)
        repeated = _per_row(r[idx], gram, pl.col("g").is_duplicated())
        if n in top:
            # no repeated n-gram: the row's first n-gram, once (0 if the row is shorter than n)
            result = np.zeros(rows, dtype=np.int64)
            long = counts >= n
            result[long] = prefix[first[long] + n] - prefix[first[long]] + n - 1
            reps = pl.DataFrame({"r": r[idx[repeated]], "g": gram[repeated], "l": length[repeated]})
            best = (reps.group_by("r")
                    .agg(c=pl.col("g").unique_counts(), f=pl.col("l").filter(pl.col("g").is_first_distinct()))
                    .select("r", (pl.col("f").list.get(pl.col("c").list.arg_max()) * pl.col("c").list.max()).alias("top")))
            result[best["r"].to_numpy()] = best["top"].to_numpy()
            out[f"top_{n}gram_chars"] = result
        idx, gram, length = idx[repeated], gram[repeated], length[repeated]
    return out


def ngram_stats(texts: pl.Series, top: tuple[int, ...] = (2, 3, 4), dup: tuple[int, ...] = ()) -> pl.Series:
    """Per row a struct of integer columns `stat_names(top, dup)` (0 for a null or empty text)."""
    names = stat_names(top, dup)
    texts = texts.cast(pl.String)
    sizes = texts.str.len_bytes().fill_null(0).cum_sum().to_numpy() if len(texts) else np.zeros(0)
    parts, start = [], 0
    while start < len(texts):
        end = max(int(np.searchsorted(sizes, (sizes[start - 1] if start else 0) + BATCH_CHARS, side="right")), start + 1)
        stats = _batch(texts.slice(start, end - start), top, dup)
        parts.append(pl.DataFrame({name: stats[name] for name in names}))
        start = end
    frame = pl.concat(parts) if parts else pl.DataFrame(schema={name: pl.Int64 for name in names})
    return frame.to_struct(texts.name)
