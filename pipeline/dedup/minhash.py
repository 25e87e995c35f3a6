"""Shingles, MinHash signatures and LSH band keys over whole batches (NumPy, Polars, rensa).

Hashing scheme (stable across library versions, documented in docs/stages/dedup.md):

- tokens: lower-cased text, ``\\w+`` runs (Polars regex, Unicode), each hashed with xxHash64
  (polars-hash, `pipeline.hashing.xxhash64`);
- shingle hash: the ``ngram`` consecutive token hashes combined as ``sum(h[i+j] * M_j)`` mod 2**64
  with fixed odd multipliers (so order matters; uniform already, since each ``h`` is, so no
  finaliser); a text with fewer than ``ngram`` tokens is one shingle of all its tokens (the
  truth's definition);
- MinHash: rensa's R-MinHash (Rust, `RMinHash.digest_matrix_from_flat_token_hashes`) over each
  document's shingle hashes, ``num_perm`` uint32 slots from ``seed``: a set sketch (order and
  repeats do not matter) whose slots agree with probability the Jaccard of the sets; one call per
  batch, no Python object per document. `signatures_numpy` keeps the classic one-hash-per-slot
  MinHash as the reference;
- band key: the band's ``rows`` signature values folded with the splitmix64 finaliser (64 bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.hashing import xxhash64

TOKEN_PATTERN = r"\w+"
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
# fixed odd multipliers for the shingle combination (digits of pi / golden ratio, odd)
_MULTIPLIERS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
    dtype=np.uint64,
)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (a bijection on uint64 with good avalanche), element-wise."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _collapsed(text: pl.Expr) -> pl.Expr:
    # = replace_all(r"\s+", " "), twice as fast: a lone space (most whitespace) is not a match,
    # so it is neither matched nor copied; runs and any other whitespace character are
    return text.str.replace_all(r"\s\s+|[^\S ]", " ").str.strip_chars()


def normalised_text(column: str = "text", nfkc: bool = True) -> pl.Expr:
    """The text exact duplicates are judged on: NFKC, lower case, whitespace runs → one space.
    ``nfkc=False`` skips NFKC (the identity on ASCII text, see `exact_keys`)."""
    text = pl.col(column).fill_null("")
    if nfkc:
        text = text.str.normalize("NFKC")
    return _collapsed(text.str.to_lowercase())


def exact_key(column: str = "text") -> pl.Expr:
    """xxHash64 of the normalised text (UInt64)."""
    return xxhash64(normalised_text(column))


def exact_keys(texts: pl.Series, lower: pl.Series | None = None) -> np.ndarray:
    """`exact_key` of each text (uint64). NFKC is applied only to the texts with a non-ASCII
    byte: it leaves ASCII unchanged and is most of the cost on mostly-ASCII corpora. ``lower``:
    the texts already lower-cased (null as ""), when the caller has them (pass 1 tokenises them)."""
    if lower is None:
        lower = texts.fill_null("").str.to_lowercase()
    frame = pl.DataFrame({"text": texts, "lower": lower}, schema={"text": pl.String, "lower": pl.String})
    out = frame.select(xxhash64(_collapsed(pl.col("lower"))))[:, 0].to_numpy().astype(np.uint64)
    # a non-ASCII character takes more than one byte in UTF-8 (no regex scan needed)
    wide = frame.select((pl.col("text").str.len_bytes() != pl.col("text").str.len_chars())
                        .fill_null(False))["text"].to_numpy()
    if wide.any():  # NFKC first, then the rest (lower-casing need not commute with NFKC)
        out[wide] = frame.filter(pl.Series(wide)).select(exact_key("text"))[:, 0].to_numpy()
    return out


@dataclass
class Shingles:
    """Shingle hashes of a batch, grouped by document.

    hashes: uint64 [n_shingles], documents' shingles contiguous, in document order.
    doc: int64 [n_shingles], the batch row each shingle belongs to.
    tokens: int64 [n_docs], tokens per document (0 = no shingle at all).
    """

    hashes: np.ndarray
    doc: np.ndarray
    tokens: np.ndarray


def token_hashes(texts: pl.Series, lowered: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row of each token, xxHash64 of each token, tokens per text) over a batch of texts, in
    text order (``lowered``: the texts are already lower-cased)."""
    text = pl.col("text").fill_null("")
    # each token is hashed inside its list (no exploded copy of the token strings), then only
    # the hashes are flattened
    frame = pl.DataFrame({"text": texts}).with_row_index("row").select(
        pl.col("row").cast(pl.Int64),
        (text if lowered else text.str.to_lowercase()).str.extract_all(TOKEN_PATTERN)
        .list.eval(xxhash64(pl.element())).alias("h"),
    )
    counts = frame["h"].list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = frame.explode("h").drop_nulls("h")
    return flat["row"].to_numpy(), flat["h"].to_numpy().astype(np.uint64), counts


def shingle_hashes(texts: pl.Series, ngram: int = 5, lowered: bool = False) -> Shingles:
    """Word n-gram shingle hashes of every text of a batch (see the module docstring;
    ``lowered``: the texts are already lower-cased).

    The window sums run over the whole batch's token array with contiguous slices (a window
    that crosses into the next text is computed, then masked out), so the cost is ``ngram``
    multiply-adds per token, not a gather per shingle."""
    if not 1 <= ngram <= len(_MULTIPLIERS):
        raise ValueError(f"ngram must be 1..{len(_MULTIPLIERS)}, got {ngram}")
    rows, h, tokens = token_hashes(texts, lowered)
    if h.size == 0:
        return Shingles(np.zeros(0, np.uint64), np.zeros(0, np.int64), tokens)
    starts = np.cumsum(tokens) - tokens
    ends = starts + tokens
    with np.errstate(over="ignore"):
        acc = h * _MULTIPLIERS[0]
        for j in range(1, ngram):
            acc[:-j] += h[j:] * _MULTIPLIERS[j]
    # a window is valid unless it runs past its text's end: the last ngram-1 positions of a
    # long text are not window starts; a shorter text (not empty) is one shingle of all its
    # tokens, at its first position (work per text, not per token)
    valid = np.ones(h.size, bool)
    long_text = tokens >= ngram
    for j in range(1, ngram):
        valid[ends[long_text] - j] = False
    short = np.flatnonzero((tokens > 0) & ~long_text)
    if short.size:
        first, width = starts[short], tokens[short]
        short_acc = np.zeros(short.size, np.uint64)
        with np.errstate(over="ignore"):
            for j in range(ngram - 1):
                inside = width > j
                short_acc += np.where(inside, h[np.where(inside, first + j, first)] * _MULTIPLIERS[j], np.uint64(0))
                valid[(first + j)[inside & (j > 0)]] = False
        acc[first] = short_acc
    return Shingles(acc[valid], rows[valid], tokens)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) uint64 parameters of the num_perm multiply-add-shift hashes (a odd); used by
    `signatures_numpy`, the reference the native kernel is tested against."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
    return a, b


def signatures(sh: Shingles, num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures: (rows that have shingles, uint32 [n, num_perm]).

    rensa's R-MinHash (Rust) over the batch's shingle hashes in one call
    (`RMinHash.digest_matrix_from_flat_token_hashes`: one flat uint64 buffer and row offsets,
    no Python object per document): a set sketch, so repeated shingles and their order do not
    change it, and its slots agree with probability equal to the Jaccard of the sets. Twenty to
    fifty times faster than one NumPy pass per permutation (`signatures_numpy`)."""
    from rensa import RMinHash

    if sh.hashes.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, num_perm), np.uint32)
    boundaries = np.flatnonzero(np.concatenate([[True], sh.doc[1:] != sh.doc[:-1]]))
    docs = sh.doc[boundaries]
    offsets = np.concatenate([boundaries, [sh.hashes.size]]).astype(np.uint64)
    matrix = RMinHash.digest_matrix_from_flat_token_hashes(sh.hashes, offsets, num_perm, seed)
    return docs, np.array(matrix.to_rows(), dtype=np.uint32).reshape(docs.size, num_perm)


def signatures_numpy(sh: Shingles, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classic MinHash with NumPy, one pass per permutation (the reference for `signatures`):
    (rows that have shingles, uint32 [n, num_perm])."""
    if sh.hashes.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, a.size), np.uint32)
    boundaries = np.flatnonzero(np.concatenate([[True], sh.doc[1:] != sh.doc[:-1]]))
    docs = sh.doc[boundaries]
    x = sh.hashes >> np.uint64(32)
    sig = np.empty((docs.size, a.size), np.uint32)
    values = np.empty_like(x)  # one buffer reused by every permutation (no allocation per pass)
    shift = np.uint64(32)
    with np.errstate(over="ignore"):
        for j in range(a.size):
            np.multiply(x, a[j], out=values)
            np.add(values, b[j], out=values)
            np.right_shift(values, shift, out=values)
            sig[:, j] = np.minimum.reduceat(values, boundaries)
    return docs, sig


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 [n, bands]: each band's rows signature values folded into one 64-bit key.

    All bands fold at once (``rows`` steps over an [n, bands] array, not one per value)."""
    blocks = sig[:, : bands * rows].reshape(sig.shape[0], bands, rows).astype(np.uint64)
    with np.errstate(over="ignore"):
        acc = np.broadcast_to((np.arange(bands, dtype=np.uint64) + np.uint64(1)) * _MULTIPLIERS[0],
                              (sig.shape[0], bands)).copy()
        for row in range(rows):
            acc = splitmix64(acc ^ blocks[:, :, row])
    return acc


_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # NumPy 2 renamed trapz


def _collision(s: np.ndarray, bands: int, rows: int) -> np.ndarray:
    return 1.0 - (1.0 - s**rows) ** bands


def optimal_bands_rows(threshold: float, num_perm: int, fn_weight: float = 0.5) -> tuple[int, int]:
    """Bands and rows (bands*rows <= num_perm) minimising the weighted false-positive area below
    the threshold plus the false-negative area above it (datasketch's rule, integrated with NumPy).
    """
    below = np.linspace(0.0, threshold, 400)
    above = np.linspace(threshold, 1.0, 400)
    shapes = [(bands, rows) for bands in range(1, num_perm + 1) for rows in range(1, num_perm // bands + 1)]
    bands_of = np.array([b for b, _ in shapes], np.float64)[:, None]
    rows_of = np.array([r for _, r in shapes], np.float64)[:, None]
    # every (bands, rows) shape at once, one row of the curve per shape (~600 x 400 values)
    fp = _trapezoid(_collision(below[None, :], bands_of, rows_of), below, axis=1)
    fn = _trapezoid(1.0 - _collision(above[None, :], bands_of, rows_of), above, axis=1)
    costs = ((1.0 - fn_weight) * fp + fn_weight * fn).tolist()
    best, best_cost = (1, num_perm), np.inf
    for shape, cost in zip(shapes, costs, strict=True):  # first clearly better shape wins, as before
        if cost < best_cost - 1e-12:
            best, best_cost = shape, cost
    return best


def shingle_matrix(node: np.ndarray, sh: np.ndarray):
    """(sorted distinct nodes, CSR matrix with one row per node holding its shingle set).

    The column of a shingle is its 64-bit hash shifted right by one (a non-negative int64;
    scipy's CSR takes any such index, so no dense ids and no global sort are needed); rows are
    sorted and de-duplicated per row by scipy (C++), every stored value is 1."""
    import scipy.sparse as sp  # imported here: see pipeline.dedup.warm_imports

    node = np.asarray(node, np.int64)
    if node.size > 1 and np.all(node[1:] >= node[:-1]):  # as read back: grouped, no sort needed
        order = None
        starts_of = np.concatenate([[True], node[1:] != node[:-1]])
        uniq = node[starts_of]
        counts = np.diff(np.concatenate([np.flatnonzero(starts_of), [node.size]]))
    else:
        order = np.argsort(node, kind="stable")
        uniq, counts = np.unique(node, return_counts=True)
    columns = (np.asarray(sh, np.uint64) >> np.uint64(1)).astype(np.int64)
    if order is not None:
        columns = columns[order]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    matrix = sp.csr_matrix((np.ones(columns.size, np.float32), columns, indptr),
                           shape=(uniq.size, _COLUMNS))
    matrix.sum_duplicates()  # sorts each row and merges repeats (their values add up)
    matrix.data[:] = 1.0
    return uniq, matrix


_COLUMNS = (1 << 63) - 1  # every shifted 64-bit hash is a valid column


def jaccard_of_sets(node: np.ndarray, sh: np.ndarray, a: np.ndarray, b: np.ndarray,
                    budget: int = 4_000_000) -> np.ndarray:
    """True Jaccard of the shingle sets of nodes a[i], b[i] (float64 per pair).

    node, sh: one row per shingle of each document (any order, repeats allowed). The sets
    become the rows of one binary CSR matrix (`shingle_matrix`); the intersection of a pair is
    the row sum of the element-wise product of its two rows (scipy merges the sorted rows in
    C++), the union is |A| + |B| - |A ∩ B|. No loop over pairs: they go in chunks whose rows
    hold at most ``budget`` shingles together (bounds the product's memory).
    """
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    out = np.zeros(a.size, np.float64)
    if a.size == 0 or np.asarray(sh).size == 0:
        return out
    uniq, matrix = shingle_matrix(node, sh)
    sizes = np.diff(matrix.indptr)

    def index(nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = np.minimum(np.searchsorted(uniq, nodes), uniq.size - 1)
        return i, np.where(uniq[i] == nodes, sizes[i], 0)

    ia, na = index(a)
    ib, nb = index(b)
    cost = np.cumsum(na + nb)
    chunk_of = (cost - (na + nb)) // max(1, budget)
    bounds = np.flatnonzero(np.diff(chunk_of)) + 1
    inter = np.zeros(a.size, np.int64)
    for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [a.size]]), strict=True):
        both = (na[lo:hi] > 0) & (nb[lo:hi] > 0)
        if not both.any():
            continue
        pick = np.flatnonzero(both) + lo
        product = matrix[ia[pick]].multiply(matrix[ib[pick]])
        inter[pick] = np.asarray(product.sum(axis=1)).ravel().astype(np.int64)
    union = na + nb - inter
    np.divide(inter, union, out=out, where=union > 0)
    return out


def jaccard_of_pairs(shingles: pl.DataFrame, pairs: pl.DataFrame, distinct: bool = False) -> pl.Series:
    """True Jaccard of shingle sets for pairs.

    shingles: columns ``node`` (Int64) and ``sh`` (UInt64), one row per shingle (repeats allowed).
    pairs: columns ``a``, ``b`` (Int64 nodes). Returns Float64 aligned with pairs' rows.
    ``distinct`` is accepted for compatibility (repeats are dropped either way).
    """
    node = shingles["node"].to_numpy()
    sh = shingles["sh"].to_numpy()
    sims = jaccard_of_sets(node, sh, pairs["a"].to_numpy(), pairs["b"].to_numpy())
    return pl.Series("similarity", sims, pl.Float64)
