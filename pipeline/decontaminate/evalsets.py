"""Eval sets as sorted n-gram hash sets on disk: read the files, hash on the workers, merge.

An eval set is files (JSONL, JSON array, Parquet, CSV/TSV; optionally .gz/.bz2) or a dataset
folder (Parquet shards), with the text fields to check named. Building its set is a global fit
in two passes, neither of which holds the whole set in the driver:

1. one task per eval file or shard: its fields' windows (see `ngrams.windows`), sorted and
   de-duplicated, saved as ``parts/<set>/<k>.npy``; returns the count;
2. the hash range is cut into buckets of at most `BUCKET_HASHES` expected hashes; one task per
   bucket reads its slice of every part (parts are sorted, so a slice is one `searchsorted`
   through a memory map), de-duplicates it and saves it; the driver appends the buckets in
   order into ``<set>.npy`` one at a time (ascending buckets of sorted hashes are sorted).

Workers memory-map the final ``.npy`` (`np.load(mmap_mode="r")`) for their lookups.
"""

from __future__ import annotations

import glob as globlib
import io
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.dataset import Dataset
from pipeline.decontaminate.ngrams import batches, windows
from pipeline.errors import JobError
from pipeline.fetch.files import COMPRESSIONS, open_maybe_compressed

BUCKET_HASHES = 8_000_000  # hashes one merge task holds (64 MB of uint64; its sort needs about 3x)
EVAL_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
                ".csv": "csv", ".tsv": "tsv"}


class EvalSetError(JobError):
    """An eval set cannot be read or lacks a named field; the message names the file and field."""


def eval_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    return EVAL_FORMATS.get(suffixes[-1]) if suffixes else None


def eval_files(name: str, path: str) -> list[Path]:
    """The files of one eval set: a dataset folder's shards, or the files a path/glob matches."""
    expanded = os.path.expanduser(path)
    if Path(expanded).is_dir():
        return Dataset(expanded).require_shards()
    matches = sorted(Path(p) for p in globlib.glob(expanded, recursive=True) if Path(p).is_file())
    readable = [p for p in matches if eval_format(p) is not None]
    if not readable:
        raise EvalSetError(f"decontaminate: eval set {name!r}: no readable file matches {path!r} "
                           f"(formats: {', '.join(sorted(set(EVAL_FORMATS.values())))}, optionally "
                           ".gz/.bz2, or a dataset folder)")
    return readable


def read_eval_file(path: Path) -> pl.DataFrame:
    fmt = eval_format(path)
    try:
        if fmt == "parquet":
            return pl.read_parquet(path)
        with open_maybe_compressed(path) as handle:
            data = handle.read()
        if fmt == "jsonl":
            return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
        if fmt == "json":
            value = json.loads(data)
            if isinstance(value, dict):  # {"data": [...]} and similar: the one list inside
                lists = [v for v in value.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise EvalSetError(f"{path}: a JSON object must hold exactly one list of records")
                value = lists[0]
            return pl.DataFrame(value, infer_schema_length=None)
        separator = "\t" if fmt == "tsv" else ","
        return pl.read_csv(io.BytesIO(data), separator=separator, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EvalSetError(f"{path}: cannot read as {fmt}: {error}") from None


def field_texts(frame: pl.DataFrame, fields: list[str], where: str) -> pl.Series:
    """Every text of the named fields, one per row and field; a chat field (list of
    {role, content}) gives one text per turn. A missing field is an error naming it."""
    parts = []
    for name in fields:
        if name not in frame.columns:
            raise EvalSetError(f"{where}: no field {name!r} (fields: {', '.join(frame.columns)})")
        column = frame[name]
        if isinstance(column.dtype, pl.List) and isinstance(column.dtype.inner, pl.Struct):
            column = column.explode().struct.field("content")
        elif column.dtype != pl.String:
            column = column.cast(pl.String)
        parts.append(column.drop_nulls().alias("t"))
    return pl.concat(parts) if parts else pl.Series("t", [], pl.String)


INSTRUCTION_FIELDS = ("system", "prompt", "response")


def record_texts(frame: pl.DataFrame) -> tuple[np.ndarray, pl.Series]:
    """(row, text) of every text a record holds, by its kind: `text` for text rows (and rows
    without a `kind`), `system`/`prompt`/`response` for instruction rows, every turn's `content`
    for chat rows. Windows never span two texts."""
    indexed = frame.with_row_index("_row")
    kind = pl.col("kind") if "kind" in frame.columns else pl.lit("text")
    parts = []
    if "text" in frame.columns:
        parts.append(indexed.filter(kind.fill_null("text") == "text").select("_row", pl.col("text").cast(pl.String).alias("t")))
    for name in INSTRUCTION_FIELDS:
        if name in frame.columns:
            parts.append(indexed.select("_row", pl.col(name).cast(pl.String).alias("t")))
    if "messages" in frame.columns:
        parts.append(indexed.select("_row", pl.col("messages")).explode("messages")
                     .select("_row", pl.col("messages").struct.field("content").cast(pl.String).alias("t")))
    if not parts:
        raise EvalSetError(f"no text to check: none of the columns text, {', '.join(INSTRUCTION_FIELDS)}, "
                           f"messages is present (columns: {', '.join(frame.columns)})")
    texts = pl.concat(parts).drop_nulls("t").sort("_row", maintain_order=True)
    return texts["_row"].cast(pl.Int64).to_numpy(), texts["t"]


@dataclass
class PartTask:
    """Hash one eval file or shard into a sorted unique part file."""

    name: str
    source: Path
    fields: list[str] | None  # None: the record's own texts by kind (our val/test)
    n: int
    target: Path
    zero_numbers: bool = False


def hash_part(task: PartTask) -> dict[str, int]:
    frame = read_eval_file(task.source)
    if task.fields is None:
        texts = record_texts(frame)[1]
    else:
        texts = field_texts(frame, task.fields, f"eval set {task.name!r}, {task.source}")
    lengths = texts.str.len_bytes().to_numpy()
    parts = [np.unique(windows(texts.slice(a, b - a), task.n, task.zero_numbers).hashes) for a, b in batches(lengths)]
    hashes = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
    save_npy(task.target, hashes)
    return {"rows": frame.height, "texts": texts.len(), "ngrams": int(len(hashes))}


@dataclass
class BucketTask:
    """Merge one hash range [low, high) of every part into a sorted unique bucket file."""

    parts: list[Path]
    low: int
    high: int  # exclusive; 2**64 for the last bucket
    target: Path


def merge_bucket(task: BucketTask) -> int:
    slices = []
    for part in task.parts:
        hashes = np.load(part, mmap_mode="r")
        a = int(np.searchsorted(hashes, np.uint64(task.low)))
        b = len(hashes) if task.high >= 2**64 else int(np.searchsorted(hashes, np.uint64(task.high)))
        slices.append(np.asarray(hashes[a:b]))
    merged = np.unique(np.concatenate(slices)) if slices else np.zeros(0, np.uint64)
    save_npy(task.target, merged)
    return int(len(merged))


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save under a temporary name, then a rename (a killed task leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array, dtype=np.uint64))
    os.replace(tmp, path)


def build_set(engine, name: str, sources: list[Path], fields: list[str] | None, n: int, folder: Path,
              zero_numbers: bool = False) -> dict[str, int]:
    """Write ``folder/<name>.npy`` (sorted unique uint64) from the sources; return counts."""
    work = folder / "_parts" / name
    if work.exists():
        shutil.rmtree(work)
    tasks = [PartTask(name, source, fields, n, work / f"{k:06d}.npy", zero_numbers) for k, source in enumerate(sources)]
    counts = engine.map(hash_part, tasks, labels=[str(s) for s in sources], desc=f"decontaminate:{name}")
    parts = [t.target for t in tasks]
    upper = sum(c["ngrams"] for c in counts)
    buckets = max(1, 2 ** math.ceil(math.log2(max(1, math.ceil(upper / BUCKET_HASHES)))))
    step = 2**64 // buckets
    merges = [BucketTask(parts, b * step, 2**64 if b == buckets - 1 else (b + 1) * step,
                         work / f"bucket-{b:05d}.npy") for b in range(buckets)]
    sizes = engine.map(merge_bucket, merges, labels=[f"{name} bucket {b}" for b in range(buckets)],
                       desc=f"decontaminate:{name}:merge")
    target = folder / f"{name}.npy"
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint64, shape=(sum(sizes),))
    offset = 0
    for merge, size in zip(merges, sizes, strict=True):
        out[offset:offset + size] = np.load(merge.target, mmap_mode="r")
        offset += size
    out.flush()
    del out
    os.replace(tmp, target)
    shutil.rmtree(work)
    return {"files": len(sources), "rows": sum(c["rows"] for c in counts),
            "texts": sum(c["texts"] for c in counts), "ngrams": int(sum(sizes))}
