"""The worker side of dedup: module-level functions shipped to `Engine.map`, one pass each.

pass 1 (per input shard): exact keys, shingles, MinHash signatures, band keys → ``_work/bands/
  p=PPPPP/s=SSSSS.parquet`` (partitioned by a hash of band and bucket key).
pass 2 (per band partition): buckets → candidate edges → ``_work/edges/s=SSSSS/p=PPPPP.parquet``
  (partitioned by the input shard of the edge's first document).
pass 2b (per input shard): edges de-duplicated and, with ``verify``, checked by their true
  Jaccard (from the shingles pass 1 stored as memory-mapped ``.npy`` arrays, only the documents
  involved read) → ``_work/verified/``.
lookup (per input shard): true Jaccard of (removed, kept) pairs and ids of referenced rows.
pass 3 (per input shard): kept rows (+ near_group) → output, removed rows → audit.

A node is a document's global index: ``shard_index << 32 | row``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.dataset import ShardInfo, StageOutput, TaskRecord
from pipeline.dedup import minhash
from pipeline.stage import batch_starts

EXACT_BAND = 65535  # band number of the exact-key "band" in the band files
ROW_BITS = 32
EDGE_SCHEMA = {
    "a": pl.Int64, "b": pl.Int64, "exact": pl.Boolean, "dup": pl.Boolean, "group": pl.Boolean,
    "score_a": pl.Float64, "score_b": pl.Float64, "ekey_a": pl.UInt64, "ekey_b": pl.UInt64,
}


@dataclass
class Plan:
    """Everything a worker needs, shared by every task (pickled: paths, numbers, strings)."""

    shards: list[str]  # input shard paths, index = shard number
    work: str  # the _work folder
    output: StageOutput
    exact: bool
    near: bool
    ngram: int
    num_perm: int
    seed: int
    bands: int
    rows: int
    group_bands: int  # 0 = no near_group LSH
    group_rows: int
    threshold: float
    group_threshold: float
    verify: bool
    verify_margin: float
    keep: str
    partitions: int
    batch_docs: int
    batch_bytes: int
    max_bucket: int
    key: str = "record"  # "record" (the `text` rendering) or "prompt" (pipeline.records.prompt_text)


def shard_of(node: pl.Expr | np.ndarray):
    """The input shard number of a node (works on NumPy arrays and Polars expressions)."""
    return node // (1 << ROW_BITS)


def read_rows(path: str, rows: np.ndarray | None, columns: list[str]) -> pl.DataFrame:
    """Columns of a shard with a ``row`` index, optionally only the given rows."""
    frame = pl.scan_parquet(path, hive_partitioning=False).select(columns).with_row_index("row")
    if rows is not None:
        frame = frame.filter(pl.col("row").is_in(pl.Series(rows, dtype=pl.UInt32).implode()))
    return frame.collect().with_columns(pl.col("row").cast(pl.Int64))


def _write_atomic(plan: Plan, relpath: str, rows: int, write: Callable[[Path], None]) -> ShardInfo:
    """Write one intermediate file under _work atomically: `write` fills a temporary name,
    which is then renamed; the record holds its rows and size (what resume checks)."""
    target = plan.output.outputs["work"] / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        write(tmp)
        info = ShardInfo(relpath, rows, tmp.stat().st_size, "")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return info


def write_work(plan: Plan, frame: pl.DataFrame, relpath: str) -> ShardInfo:
    """One Parquet file under _work.

    LZ4 and no column statistics: these files are read once or twice by the next pass and
    deleted at the end, and most of their bytes are random hashes that no codec shrinks, so
    zstd and statistics (and the output shards' SHA-256) cost time for nothing; the size alone
    tells a resume whether the file is whole."""
    return _write_atomic(plan, relpath, frame.height,
                         lambda tmp: frame.write_parquet(tmp, compression="lz4", statistics=False))


def write_work_array(plan: Plan, array: np.ndarray, relpath: str) -> ShardInfo:
    """One NumPy array under _work (a ``.npy`` file, read back memory-mapped: a reader gathers
    only the slices it needs, with no decoding)."""
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: given a name, np.save would append ".npy"
            np.save(handle, array, allow_pickle=False)

    return _write_atomic(plan, relpath, int(array.shape[0]), save)


def _record(plan: Plan, task: str, outputs: dict[str, list], counts: dict[str, int],
            extra: dict[str, Any] | None = None) -> TaskRecord:
    record = TaskRecord(task=task, fingerprint="", outputs=outputs, counts=counts, extra=extra or {})
    return plan.output.commit(record)


def _score(keep: str, sh: minhash.Shingles, n: int) -> np.ndarray:
    """What --keep ranks by: first → 0 (ties go to the first document), longest → tokens,
    best → distinct shingles (most distinct content)."""
    if keep == "longest":
        return sh.tokens.astype(np.float64)
    if keep == "best":
        frame = pl.DataFrame({"doc": sh.doc, "sh": sh.hashes}).group_by("doc").agg(pl.col("sh").n_unique())
        score = np.zeros(n, np.float64)
        score[frame["doc"].to_numpy()] = frame["sh"].to_numpy()
        return score
    return np.zeros(n, np.float64)


# -- pass 1 ------------------------------------------------------------------------------------
def band_rows_of_batch(texts: pl.Series, first_row: int, shard: int,
                       plan: Plan) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Band rows (band, key, node, ekey, score), signatures (uint32 [texts, num_perm], zeros for
    a text without shingles), and for --verify the
    shingle hashes (in text order, repeats kept) with the number of them of each text. Pure."""
    n = len(texts)
    nodes = (np.int64(shard) << ROW_BITS) | (np.arange(n, dtype=np.int64) + first_row)
    lower = texts.fill_null("").str.to_lowercase()  # once, for the exact keys and the tokens
    ekey = minhash.exact_keys(texts, lower)
    parts = []
    signed = np.zeros((n, plan.num_perm if plan.near else 0), np.uint32)  # a text without shingles: zeros
    hashes, per_text = np.zeros(0, np.uint64), np.zeros(n, np.int64)
    sh = minhash.shingle_hashes(lower, plan.ngram, lowered=True) if plan.near or plan.keep != "first" else None
    score = _score(plan.keep, sh, n) if sh is not None else np.zeros(n)
    if plan.exact:
        parts.append(pl.DataFrame({
            "band": np.full(n, EXACT_BAND, np.uint16), "key": ekey, "node": nodes,
            "ekey": ekey, "score": score,
        }))
    if plan.near:
        docs, sig = minhash.signatures(sh, plan.num_perm, plan.seed)
        signed[docs] = sig
        if plan.verify:
            # as produced (repeats kept): sorting and de-duplicating here cost more than doing it
            # in pass 2b for the few documents that have a candidate to check
            hashes, per_text = sh.hashes, np.bincount(sh.doc, minlength=n).astype(np.int64)
        families = [(0, plan.bands, plan.rows), (plan.bands, plan.group_bands, plan.group_rows)]
        for offset, bands, rows in families:
            if bands == 0 or docs.size == 0:
                continue
            if offset == 0:
                keys = minhash.band_keys(sig, bands, rows)
            else:  # the group family uses the signature from the end, independent of the first
                keys = minhash.band_keys(sig[:, ::-1], bands, rows)
            parts.append(pl.DataFrame({
                "band": np.repeat(np.arange(bands, dtype=np.uint16) + offset, docs.size),
                "key": keys.T.reshape(-1), "node": np.tile(nodes[docs], bands),
                "ekey": np.tile(ekey[docs], bands), "score": np.tile(score[docs], bands),
            }))
    if not parts:
        return pl.DataFrame(schema={"band": pl.UInt16, "key": pl.UInt64, "node": pl.Int64,
                                    "ekey": pl.UInt64, "score": pl.Float64}), signed, hashes, per_text
    return pl.concat(parts), signed, hashes, per_text


def dedup_key_text(key: str, schema) -> pl.Expr:
    """The text two rows are compared by: `text`, or with key = "prompt" the asking part of
    instruction/chat records (pipeline.records.prompt_text; documents keep their text)."""
    from pipeline.records import prompt_text

    return prompt_text() if key == "prompt" and "kind" in schema else pl.col("text")


def partition_of(partitions: int) -> pl.Expr:
    """The band partition of a band row: a hash of (band, key) modulo the partition count."""
    mixed = pl.col("key") ^ (pl.col("band").cast(pl.UInt64) * pl.lit(0x9E3779B97F4A7C15, pl.UInt64))
    return ((mixed // (1 << 17)) % partitions).cast(pl.Int32)


def pass1_shard(args: tuple[Plan, int]) -> TaskRecord:
    plan, shard = args
    path = plan.shards[shard]
    frame = pl.scan_parquet(path, hive_partitioning=False)
    # the shard's key text is read once (a shard bounds memory; pass 3 reads whole shards too)
    text = frame.select(dedup_key_text(plan.key, frame.collect_schema()).alias("text")).collect()["text"]
    lengths = text.str.len_bytes().fill_null(0).to_numpy()
    total = len(lengths)
    starts = batch_starts(lengths, plan.batch_docs, plan.batch_bytes)  # [0] for an empty shard,
    stops = [*starts[1:], total]  # which still writes its files
    pieces, signed, hashes, per_text = [], [], [], []
    for start, stop in zip(starts.tolist(), stops, strict=True):
        texts = text.slice(start, stop - start)
        band_rows, sigs, batch_hashes, batch_counts = band_rows_of_batch(texts, start, shard, plan)
        pieces.append(band_rows)
        signed.append(sigs)
        hashes.append(batch_hashes)
        per_text.append(batch_counts)
    rows = pl.concat(pieces).with_columns(p=partition_of(plan.partitions))
    written = []
    if plan.near:
        written.append(write_work_array(plan, np.concatenate(signed), f"sig/s={shard:05d}.npy"))
    if plan.near and plan.verify:  # row r's shingles: hashes[offsets[r]:offsets[r + 1]]
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(per_text))]).astype(np.int64)
        written.append(write_work_array(plan, np.concatenate(hashes), f"shingles/s={shard:05d}.npy"))
        written.append(write_work_array(plan, offsets, f"shingles/s={shard:05d}.offsets.npy"))
    for (part,), piece in sorted(rows.partition_by("p", as_dict=True).items()):
        rel = f"bands/p={part:05d}/s={shard:05d}.parquet"
        written.append(write_work(plan, piece.drop("p"), rel))
    return _record(plan, f"pass1:{shard}", {"work": written},
                   {"docs": total, "band_rows": rows.height}, {"text_bytes": int(lengths.sum())})


# -- pass 2 ------------------------------------------------------------------------------------
def bucket_edges(rows: pl.DataFrame, plan: Plan) -> pl.DataFrame:
    """Candidate edges of band rows: every pair of a bucket (star to its first node above
    max_bucket); exact buckets give a star of exact edges. Pure (unit-testable)."""
    attrs = rows.group_by("node").agg(pl.col("score").first(), pl.col("ekey").first())
    exact = rows.filter(pl.col("band") == EXACT_BAND)
    near = rows.filter(pl.col("band") != EXACT_BAND)
    edges = []
    if exact.height:
        star = exact.with_columns(a=pl.col("node").min().over("key")).filter(pl.col("node") != pl.col("a"))
        edges.append(star.select("a", b="node", exact=pl.lit(True), dup=pl.lit(False), group=pl.lit(False)))
    if near.height:
        if plan.exact:  # one node per distinct text in a bucket: exact edges join the rest
            near = near.unique(["band", "key", "ekey"], keep="first", maintain_order=True)
        near = near.with_columns(size=pl.len().over("band", "key")).filter(pl.col("size") > 1)
        small = near.filter(pl.col("size") <= plan.max_bucket).select("band", "key", "node")
        big = near.filter(pl.col("size") > plan.max_bucket)
        pairs = small.join(small, on=["band", "key"], suffix="_b").filter(pl.col("node") < pl.col("node_b"))
        pairs = pairs.select("band", a="node", b="node_b")
        if big.height:
            star = big.with_columns(a=pl.col("node").min().over("band", "key")).filter(pl.col("node") != pl.col("a"))
            pairs = pl.concat([pairs, star.select("band", "a", b="node")])
        is_dup = pl.col("band") < plan.bands
        edges.append(pairs.group_by("a", "b").agg(exact=pl.lit(False), dup=is_dup.any(), group=(~is_dup).any()))
    if not edges:
        return pl.DataFrame(schema=EDGE_SCHEMA)
    out = pl.concat(edges).group_by("a", "b").agg(pl.col("exact", "dup", "group").any())
    out = (out.join(attrs.rename({"node": "a", "score": "score_a", "ekey": "ekey_a"}), on="a", how="left")
              .join(attrs.rename({"node": "b", "score": "score_b", "ekey": "ekey_b"}), on="b", how="left"))
    return out.select(list(EDGE_SCHEMA)).sort("a", "b")


def pass2_partition(args: tuple[Plan, int]) -> TaskRecord:
    plan, part = args
    folder = Path(plan.work) / "bands" / f"p={part:05d}"
    files = sorted(str(f) for f in folder.glob("*.parquet") if not f.name.startswith("."))
    written, n_edges = [], 0
    if files:
        rows = pl.read_parquet(files)
        edges = bucket_edges(rows, plan)
        n_edges = edges.height
        edges = edges.with_columns(s=shard_of(pl.col("a")).cast(pl.Int32))
        for (shard,), piece in sorted(edges.partition_by("s", as_dict=True).items()):
            rel = f"edges/s={shard:05d}/p={part:05d}.parquet"
            written.append(write_work(plan, piece.drop("s"), rel))
    return _record(plan, f"pass2:{part}", {"work": written}, {"candidate_edges": n_edges})


# -- pass 2b -----------------------------------------------------------------------------------
def _shingle_store(plan: Plan, shard: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, offsets) of a shard's stored shingles, memory-mapped (nothing read yet)."""
    folder = Path(plan.work) / "shingles"
    return (np.load(folder / f"s={shard:05d}.npy", mmap_mode="r"),
            np.load(folder / f"s={shard:05d}.offsets.npy", mmap_mode="r"))


def load_shingles(plan: Plan, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(node of each shingle, shingle hash) of the given documents, grouped by node in node
    order (repeats kept): for each shard, the documents' slices of its memory-mapped store are
    gathered with one fancy index (only their pages are read)."""
    nodes = np.unique(np.asarray(nodes, np.int64))
    node_parts, hash_parts = [], []
    for shard in np.unique(shard_of(nodes)):
        mine = nodes[shard_of(nodes) == shard]
        store, offsets = _shingle_store(plan, int(shard))
        rows = mine % (1 << ROW_BITS)
        first, count = offsets[rows], offsets[rows + 1] - offsets[rows]
        position = np.repeat(first - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
        node_parts.append(np.repeat(mine, count))
        hash_parts.append(np.asarray(store[position], np.uint64))
    if not node_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    return np.concatenate(node_parts), np.concatenate(hash_parts)


def shingle_counts(plan: Plan, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted nodes, shingle rows of each) of the given documents, from the stores' offsets."""
    nodes = np.unique(np.asarray(nodes, np.int64))
    sizes = np.zeros(nodes.size, np.int64)
    for shard in np.unique(shard_of(nodes)):
        mine = shard_of(nodes) == shard
        _, offsets = _shingle_store(plan, int(shard))
        rows = nodes[mine] % (1 << ROW_BITS)
        sizes[mine] = offsets[rows + 1] - offsets[rows]
    return nodes, sizes


def pair_similarity(plan: Plan, pairs: pl.DataFrame, budget: int = 4_000_000,
                    max_shingles: int = 2_000_000) -> pl.Series:
    """True Jaccard (the truth's definition, over 64-bit shingle hashes) of pairs a, b.

    The pairs go in chunks whose documents hold at most ``max_shingles`` shingle rows together
    (counted from the stores' offsets; a pair larger than that goes alone): the sets of a
    chunk's documents are gathered once from the memory-mapped stores, and
    `minhash.jaccard_of_sets` intersects each pair's rows of a sparse matrix (scipy, in chunks
    of ``budget`` shingles). Without chunks a
    task held every set at once: at 72x the scale corpus, 4,251 documents of long man pages
    took 512 MiB workers over their limit."""
    if pairs.height == 0:
        return pl.Series("similarity", [], pl.Float64)
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    nodes, sizes = shingle_counts(plan, np.concatenate([a, b]))

    def size(x: np.ndarray) -> np.ndarray:
        if nodes.size == 0:  # no document of these pairs has a shingle
            return np.zeros(x.size, np.int64)
        i = np.minimum(np.searchsorted(nodes, x), nodes.size - 1)
        return np.where(nodes[i] == x, sizes[i], 0)

    # each pair counted with both sets (a document shared by pairs of a chunk counts again: the
    # bound holds, chunks are only smaller); consecutive pairs share documents (sorted by a)
    cost = np.cumsum(size(a) + size(b))
    chunk_of = cost // max(1, max_shingles)
    sims = np.zeros(a.size, np.float64)
    for chunk in np.unique(chunk_of):
        pick = np.flatnonzero(chunk_of == chunk)
        node, sh = load_shingles(plan, np.concatenate([a[pick], b[pick]]))
        sims[pick] = minhash.jaccard_of_sets(node, sh, a[pick], b[pick], budget)
    return pl.Series("similarity", sims, pl.Float64)


def load_signatures(plan: Plan, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted nodes, uint32 [n, num_perm] signatures) of the given documents, gathered shard by
    shard from the memory-mapped signature arrays pass 1 wrote."""
    nodes = np.unique(np.asarray(nodes, np.int64))
    sigs = np.zeros((nodes.size, plan.num_perm), np.uint32)
    for shard in np.unique(shard_of(nodes)):
        mine = shard_of(nodes) == shard
        store = np.load(Path(plan.work) / "sig" / f"s={int(shard):05d}.npy", mmap_mode="r")
        sigs[mine] = store[nodes[mine] % (1 << ROW_BITS)]
    return nodes, sigs


def estimated_similarity(plan: Plan, pairs: pl.DataFrame, chunk: int = 50000) -> np.ndarray:
    """MinHash estimate of the Jaccard of pairs a, b: the share of equal signature values."""
    if pairs.height == 0:
        return np.zeros(0)
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    nodes, sig = load_signatures(plan, np.concatenate([a, b]))
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    out = np.empty(a.size)
    for start in range(0, a.size, chunk):
        end = start + chunk
        out[start:end] = (sig[ia[start:end]] == sig[ib[start:end]]).mean(axis=1)
    return out


def pass2b_verify(args: tuple[Plan, int]) -> TaskRecord:
    plan, shard = args
    folder = Path(plan.work) / "edges" / f"s={shard:05d}"
    files = sorted(str(f) for f in folder.glob("*.parquet") if not f.name.startswith("."))
    if not files:
        return _record(plan, f"verify:{shard}", {"work": []}, {})
    edges = (pl.read_parquet(files).group_by("a", "b")
             .agg(pl.col("exact", "dup", "group").any(), pl.col("score_a", "score_b", "ekey_a", "ekey_b").first())
             .sort("a", "b"))
    exact = edges.filter("exact").with_columns(similarity=pl.lit(1.0), checked=pl.lit(True))
    near = edges.filter(~pl.col("exact"))
    near = near.with_columns(similarity=pl.Series(estimated_similarity(plan, near), dtype=pl.Float64))
    checked = 0
    if plan.verify:
        # the estimate's standard deviation is <= 0.5/sqrt(num_perm) (0.044 at 128): only
        # candidates whose estimate lies within verify_margin of the threshold can be judged
        # wrongly by it, so only they pay for reading shingle sets (verify_margin=1: every one)
        ambiguous = pl.col("dup") & ((pl.col("similarity") - plan.threshold).abs() < plan.verify_margin)
        close, rest = near.filter(ambiguous), near.filter(~ambiguous)
        checked = close.height
        close = close.with_columns(similarity=pair_similarity(plan, close), checked=pl.lit(True))
        near = pl.concat([close, rest.with_columns(checked=pl.lit(False))])
    else:
        near = near.with_columns(checked=pl.lit(False))
    grouping = plan.group_bands > 0
    near = near.with_columns(
        dup=pl.col("dup") & (pl.col("similarity") >= plan.threshold),
        group=(pl.col("group") | pl.col("dup")) & (pl.col("similarity") >= plan.group_threshold)
        & pl.lit(grouping),
    ).filter(pl.col("dup") | pl.col("group"))
    out = pl.concat([exact, near]).sort("a", "b")
    info = write_work(plan, out, f"verified/s={shard:05d}.parquet")
    return _record(plan, f"verify:{shard}", {"work": [info]},
                   {"verified_pairs": checked, "edges_kept": out.height})


# -- lookups -----------------------------------------------------------------------------------
def lookup_shard(args: tuple[Plan, int, np.ndarray, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """ids of the given rows of a shard, and true Jaccard of (removed, kept) pairs whose removed
    document is in this shard."""
    plan, shard, rows, removed, kept = args
    ids = read_rows(plan.shards[shard], rows, ["id"]).sort("row")
    sims = np.zeros(0)
    if removed.size:
        pairs = pl.DataFrame({"a": removed, "b": kept})
        sims = (pair_similarity(plan, pairs).to_numpy() if plan.verify
                else estimated_similarity(plan, pairs))
    return {"rows": ids["row"].to_numpy(), "ids": ids["id"].to_numpy(), "similarity": sims}


# -- pass 3 ------------------------------------------------------------------------------------
ASSIGN_SCHEMA = {"row": pl.Int64, "removed": pl.Boolean, "kept_id": pl.String, "kind": pl.String,
                 "similarity": pl.Float64, "near_group": pl.String}


def apply_assignment(frame: pl.DataFrame, assign: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept rows with near_group, removed rows with kept_id, kind, similarity, reason). Pure.

    In the audit `kind` is the duplicate's kind (exact|near); the record kind of instruction
    and chat rows (their own `kind` column) is kept there as `record_kind`."""
    frame = frame.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    if "kind" in frame.columns:
        frame = frame.rename({"kind": "record_kind"})
    joined = frame.join(assign.cast(ASSIGN_SCHEMA), on="row", how="left", maintain_order="left")
    removed = pl.col("removed").fill_null(False)
    kept = (joined.filter(~removed)
            .with_columns(near_group=pl.coalesce("near_group", "id"))
            .drop("row", "removed", "kept_id", "kind", "similarity"))
    if "record_kind" in kept.columns:
        kept = kept.rename({"record_kind": "kind"})
    dropped = (joined.filter(removed)
               .with_columns(reason=pl.col("kind") + "_duplicate")
               .drop("row", "removed", "near_group"))
    return kept, dropped


def pass3_shard(args: tuple[Plan, int, str, str, pl.DataFrame]) -> TaskRecord:
    plan, shard, task, relpath, assign = args
    frame = pl.read_parquet(plan.shards[shard], hive_partitioning=False)
    kept, dropped = apply_assignment(frame, assign)
    outputs = {"main": [plan.output.write("main", kept, relpath)]}
    if dropped.height:
        outputs["duplicates"] = [plan.output.write("duplicates", dropped, relpath)]
    counts = {"rows_out": kept.height}
    for kind, n in dropped.group_by("kind").len().iter_rows():
        counts[f"dropped:{kind}_duplicate"] = n
    return _record(plan, task, outputs, counts)
