"""EDA word-level operations (Wei & Zou 2019) as Polars expressions over exploded words.

Every augmented row is one (parent, copy) pair with one operation: synonym replacement (a word
replaced by one of its nearest neighbours in the corpus's own Word2Vec model), random insertion
(a neighbour of a random word inserted at a random position), random swap (two positions
exchanged) or random deletion (each word dropped with probability ``alpha``). ``alpha`` sets the
share of words changed (at least one). Texts are split on whitespace, exploded to one row per
word with its position, changed by column expressions, sorted and joined back: no per-row Python.
Randomness is xxHash64 of the augmented row's id, a purpose tag and the seed, so the output does
not depend on sharding or order and the same seed gives the same text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline.hashing import xxhash64

OPS = ("synonym", "insert", "swap", "delete")
SYNONYM_OPS = ("synonym", "insert")
MAX_ROUNDS = 16  # swaps per text at most (alpha x words, capped: longer texts change in places)
_SCALE = float(2**64)


def uniform(seed: int, tag: str, *parts: str | pl.Expr) -> pl.Expr:
    """A uniform [0, 1) number per row from the hash of the given columns, a tag and the seed."""
    pieces: list[pl.Expr] = []
    for part in parts:
        pieces += [pl.col(part).cast(pl.String) if isinstance(part, str) else part.cast(pl.String), pl.lit(":")]
    return xxhash64(pl.concat_str([*pieces, pl.lit(f"{tag}:{seed}")])).cast(pl.Float64) / _SCALE


def pick(seed: int, tag: str, n: pl.Expr, *parts: str | pl.Expr) -> pl.Expr:
    """A seeded integer in [0, n) per row (n >= 1)."""
    return (uniform(seed, tag, *parts) * n).floor().cast(pl.Int64)


def synonym_table(words: list[str], keyed_vectors, neighbours: int, min_similarity: float,
                  chunk: int = 512) -> pl.DataFrame:
    """word → its nearest neighbours (cosine >= min_similarity, itself excluded), as a List column.

    Only the given words that the model knows are looked up; the products run in chunks of
    ``chunk`` words against the whole vocabulary (memory: chunk x vocabulary floats).
    """
    vocabulary = keyed_vectors.key_to_index
    known = sorted({w for w in words if w in vocabulary})
    if not known:
        return pl.DataFrame(schema={"_word_key": pl.String, "_synonyms": pl.List(pl.String)})
    normed = keyed_vectors.get_normed_vectors()
    names = np.asarray(keyed_vectors.index_to_key, dtype=object)
    rows = np.array([vocabulary[w] for w in known])
    found: list[list[str]] = []
    for start in range(0, len(rows), chunk):
        block = rows[start:start + chunk]
        similarity = normed[block] @ normed.T
        similarity[np.arange(len(block)), block] = -np.inf
        k = min(neighbours, similarity.shape[1] - 1)
        # the k best per row (argpartition: linear), then those k in order, ties by vocabulary index
        best = np.sort(np.argpartition(-similarity, k - 1, axis=1)[:, :k], axis=1)
        order = np.argsort(-np.take_along_axis(similarity, best, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(best, order, axis=1)
        good = np.take_along_axis(similarity, top, axis=1) >= min_similarity
        found += [names[t[g]].tolist() for t, g in zip(top, good, strict=True)]
    table = pl.DataFrame({"_word_key": known, "_synonyms": found},
                         schema={"_word_key": pl.String, "_synonyms": pl.List(pl.String)})
    return table.filter(pl.col("_synonyms").list.len() > 0)


def load_keyed_vectors(path: Path):
    from gensim.models import KeyedVectors

    return KeyedVectors.load(str(path), mmap="r")


def plan_copies(parents: pl.DataFrame, ops: list[str], seed: int) -> pl.DataFrame:
    """One row per augmented copy: parent columns + `_aug_id`, `_copy`, `_op` (parents need `_copies`)."""
    return (parents.with_columns(_copy=pl.int_ranges(0, pl.col("_copies")))
            .explode("_copy").drop_nulls("_copy")
            .with_columns(_aug_id=pl.concat_str(pl.col("id").cast(pl.String), pl.lit("-aug"),
                                                pl.col("_copy").cast(pl.String)))
            .with_columns(_op=pl.lit(pl.Series(ops, dtype=pl.String)).gather(
                pick(seed, "op", pl.lit(len(ops)), "_aug_id")) if len(ops) > 1 else pl.lit(ops[0])))


def augment_texts(copies: pl.DataFrame, text_column: str, alpha: float, seed: int,
                  vocabulary: list[str] = (), synonyms_of=None) -> pl.Series:
    """The new text of every planned copy (same order as ``copies``: `_aug_id`, `_op`, text).

    ``vocabulary``: the words the Word2Vec model knows; ``synonyms_of(words) -> frame`` (see
    `synonym_table`) is asked only for the words the synonym and insertion copies chose, so the
    neighbour search costs the words changed, not every word of the shard.
    """
    words = (copies.select("_aug_id", "_op", _words=pl.col(text_column).fill_null("").str.extract_all(r"\S+"))
             .with_row_index("_row")
             .with_columns(_n=pl.col("_words").list.len())
             .with_columns(_changes=(pl.col("_n").cast(pl.Float64) * alpha).round().clip(1, None).cast(pl.Int64))
             .explode("_words").rename({"_words": "_word"})
             .with_columns(_pos=pl.int_range(pl.len()).over("_row").cast(pl.Float64))
             .with_columns(_pos=pl.when(pl.col("_word").is_null()).then(None).otherwise("_pos"),
                           _u=uniform(seed, "word", "_aug_id", pl.int_range(pl.len()).over("_row")),
                           _key=pl.col("_word").str.to_lowercase())
             .with_columns(_known=pl.col("_key").is_in(pl.Series(list(vocabulary), dtype=pl.String).implode())))
    # the words a copy changes: the `_changes` known words with the smallest draw
    words = words.with_columns(_chosen=(pl.when("_known").then(pl.col("_u")).otherwise(None)
                                        .rank("ordinal").over("_row") <= pl.col("_changes")).fill_null(False)
                               & pl.col("_op").is_in(SYNONYM_OPS))
    wanted = words.filter("_chosen")["_key"].unique().sort().to_list()
    synonyms = (synonyms_of(wanted) if wanted and synonyms_of is not None else
                pl.DataFrame(schema={"_word_key": pl.String, "_synonyms": pl.List(pl.String)}))
    words = words.join(synonyms, left_on="_key", right_on="_word_key", how="left", maintain_order="left")
    chosen = pl.col("_chosen") & (pl.col("_synonyms").list.len().fill_null(0) > 0)
    neighbour = pl.col("_synonyms").list.get(
        pick(seed, "syn", pl.col("_synonyms").list.len().fill_null(1).clip(1, None), "_aug_id", "_pos"),
        null_on_oob=True)
    op = pl.col("_op")
    words = words.with_columns(
        _word=pl.when((op == "synonym") & chosen.fill_null(False)).then(neighbour).otherwise("_word"),
        _keep=pl.when(op == "delete").then(
            (pl.col("_u") >= alpha) | (pl.col("_u").rank("ordinal", descending=True).over("_row") == 1))
        .otherwise(True),
    )
    inserted = (words.filter((op == "insert") & chosen.fill_null(False))
                .with_columns(_word=neighbour,
                              _pos=pick(seed, "at", pl.col("_n") + 1, "_aug_id", "_pos").cast(pl.Float64) - 0.5
                              + pl.col("_pos") / (pl.col("_n") + 1) * 1e-3))
    words = pl.concat([words, inserted.select(words.columns)])
    words = _swap(words, seed)
    joined = (words.filter(pl.col("_keep") & pl.col("_word").is_not_null())
              .sort("_row", "_pos")
              .group_by("_row", maintain_order=True).agg(pl.col("_word").str.join(" ")))
    out = pl.DataFrame({"_row": pl.Series(range(copies.height), dtype=pl.UInt32)}).join(
        joined, on="_row", how="left", maintain_order="left")
    return out["_word"].fill_null("")


def _swap(words: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Exchange two seeded positions `_changes` times (capped at MAX_ROUNDS) in the swap copies."""
    swapping = words["_op"] == "swap"
    if not swapping.any():
        return words
    rounds = min(MAX_ROUNDS, int(words.filter(swapping)["_changes"].max()))
    pos = pl.col("_pos")
    for r in range(rounds):
        first = pick(seed, f"swap{r}a", pl.col("_n").clip(1, None), "_aug_id").cast(pl.Float64)
        second = pick(seed, f"swap{r}b", pl.col("_n").clip(1, None), "_aug_id").cast(pl.Float64)
        active = (pl.col("_op") == "swap") & (pl.lit(r) < pl.col("_changes"))
        words = words.with_columns(_pos=pl.when(active & (pos == first)).then(second)
                                   .when(active & (pos == second)).then(first).otherwise(pos))
    return words
