"""Word2Vec document vectors: gensim trained on token streams read shard by shard from disk.

The corpus given to gensim is a re-iterable object that opens each shard in turn, reads its
text column in record batches and yields token lists, so the corpus is never a list in memory
(gensim iterates it once to build the vocabulary and once per epoch). Training runs in the
driver process with ``workers`` gensim threads; with one thread (the default) and a fixed seed
the model is reproducible, more threads are faster but not bit-identical run to run.

A document vector is the mean of its in-vocabulary word vectors, or their TF-IDF-weighted mean
(weights = the hashing IDF of each word's bucket, so stop words and words below ``min_df``
weigh 0). It is computed as one sparse (docs x vocabulary) product per shard.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from pipeline.features.text import TOKEN_PATTERN, hasher

_TOKEN = re.compile(TOKEN_PATTERN)


class ShardSentences:
    """Re-iterable token lists of a text column over Parquet shards (one batch in memory)."""

    def __init__(self, shards: list[Path], column: str, batch_rows: int = 2048):
        self.shards = [Path(s) for s in shards]
        self.column = column
        self.batch_rows = batch_rows

    def __iter__(self) -> Iterator[list[str]]:
        for shard in self.shards:
            parquet = pq.ParquetFile(shard)
            for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=[self.column]):
                for text in batch.column(0).to_pylist():
                    if text:
                        yield _TOKEN.findall(text.lower())


def train(shards: list[Path], column: str, vector_size: int, window: int, min_count: int,
          epochs: int, workers: int, seed: int):
    """Train gensim Word2Vec (skip-gram off: CBOW, gensim's default) on the shards' texts."""
    from gensim.models import Word2Vec

    return Word2Vec(
        sentences=ShardSentences(shards, column), vector_size=vector_size, window=window,
        min_count=min_count, epochs=epochs, workers=workers, seed=seed, sg=0,
    )


def word_weights(words: list[str], idf: np.ndarray | None, stop_words: str | None) -> np.ndarray:
    """Per-vocabulary-word weight: 1 (plain mean), or the IDF of the word's hashed bucket."""
    if idf is None:
        return np.ones(len(words), dtype=np.float32)
    buckets = hasher(len(idf), stop_words).transform(words).tocsr()
    weights = np.zeros(len(words), dtype=np.float32)
    has = np.diff(buckets.indptr) > 0  # stop words hash to nothing → weight 0
    weights[has] = idf[buckets.indices[buckets.indptr[:-1][has]]]
    return weights


def document_vectors(texts: list[str | None], words: list[str], vectors: np.ndarray,
                     weights: np.ndarray) -> np.ndarray:
    """(n_docs, d) weighted mean of in-vocabulary word vectors; zeros for documents with none."""
    counter = CountVectorizer(vocabulary={w: i for i, w in enumerate(words)}, lowercase=True,
                              token_pattern=TOKEN_PATTERN, dtype=np.float32)
    counts = counter.transform([t or "" for t in texts]).tocsr()
    weighted = counts @ sp.diags(weights)
    totals = np.asarray(weighted.sum(axis=1)).ravel()
    mean = np.asarray(weighted @ vectors) / np.where(totals > 0, totals, 1.0)[:, None]
    return mean.astype(np.float32)
