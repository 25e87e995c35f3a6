"""Local files: CSV/TSV, JSONL, Parquet → documents; HTML files and WARC captures → raw pages.

One task per structured file or WARC file, one per `html_files_per_task` HTML files; tasks
run on the engine's workers and are resumable (a finished file is not read again). Structured
files are read in batches (Polars' streaming scan), so memory stays bounded by the shard size.
Compressed files (.gz, .bz2) are streamed through a decompressor: CSV/JSONL into a temporary
file beside the output (Polars scans files, not streams), HTML and WARC directly.
"""

from __future__ import annotations

import bz2
import glob as globlib
import gzip
import json
import os
import shutil
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import polars as pl

from pipeline.dataset import StageOutput, TaskRecord
from pipeline.fetch.options import FilesSource
from pipeline.fetch.records import records_to_docs
from pipeline.fetch.writer import DOC_SCHEMA, RAW_SCHEMA, ShardRoller, raw_row

FORMATS = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".html": "html", ".htm": "html", ".xhtml": "html", ".warc": "warc",
}
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open}
PAGE_TYPES = ("text/html", "application/xhtml+xml", "text/plain")


class FilesError(ValueError):
    """A file cannot be read as the format it claims; the message names the file."""


def file_format(path: Path, forced: str = "auto") -> str | None:
    if forced != "auto":
        return forced
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    return FORMATS.get(suffixes[-1]) if suffixes else None


def expand_files(source: FilesSource) -> list[tuple[Path, str]]:
    """(path, format) of every file the source's patterns match, sorted, each once."""
    from pipeline.config import ConfigError

    found: dict[str, tuple[Path, str]] = {}
    for pattern in source.glob:
        matches = sorted(globlib.glob(os.path.expanduser(pattern), recursive=True))
        for match in matches:
            path = Path(match)
            if not path.is_file() or match in found:
                continue
            fmt = file_format(path, source.format)
            if fmt is not None:
                found[match] = (path, fmt)
    if not found:
        raise ConfigError(f"fetch files: no readable file matches {source.glob} "
                          f"(formats: {', '.join(sorted(set(FORMATS.values())))}, optionally .gz/.bz2)")
    return [found[k] for k in sorted(found)]


def open_maybe_compressed(path: Path) -> IO[bytes]:
    opener = COMPRESSIONS.get(path.suffix.lower())
    return opener(path, "rb") if opener else open(path, "rb")


def read_capped(path: Path, max_bytes: int) -> bytes | None:
    """The (decompressed) content, or None if it is larger than max_bytes (gzip bombs too)."""
    with open_maybe_compressed(path) as handle:
        data = handle.read(max_bytes + 1)
    return None if len(data) > max_bytes else data


def mtime_utc(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


@dataclass
class FilesTask:
    """One worker task: some files of one source, written under `prefix`-NNNNN shards."""

    key: str
    paths: list[str]
    fmt: str
    options: FilesSource
    output: StageOutput
    source: str
    prefix: str


def read_files(source: FilesSource, found: list[tuple[Path, str]], output: StageOutput, task: str,
               name: str, engine) -> tuple[list[TaskRecord], dict]:
    """Plan one task per structured/WARC file and per batch of HTML files; run the pending ones."""
    tasks: list[FilesTask] = []
    html = [str(p) for p, fmt in found if fmt == "html"]
    for index, (path, fmt) in enumerate(found):
        if fmt != "html":
            tasks.append(FilesTask(f"{task}:{path}", [str(path)], fmt, source, output, name,
                                   f"{task}-f{index:06d}"))
    step = source.html_files_per_task
    for start in range(0, len(html), step):
        chunk = html[start:start + step]
        tasks.append(FilesTask(f"{task}:html:{start}:{chunk[0]}", chunk, "html", source, output, name,
                               f"{task}-h{start // step:06d}"))
    todo_keys, done = output.pending(t.key for t in tasks)
    todo = [t for t in tasks if t.key in set(todo_keys)]
    records = engine.map(run_files_task, todo, labels=[t.paths[0] for t in todo], desc="fetch files")
    records = done + records
    counts: dict[str, int] = {"files": len(found), "files_resumed": len(done)}
    for record in records:
        for key, value in record.counts.items():
            if key != "rows_out":
                counts[key] = counts.get(key, 0) + value
    return records, counts


def run_files_task(task: FilesTask) -> TaskRecord:
    """Worker side: read the task's files into shards and commit the task."""
    if task.fmt in ("html", "warc"):
        roller = ShardRoller(task.output, task.source, task.prefix, task.options.shard_bytes, RAW_SCHEMA)
        counts = _read_pages(task, roller)
    else:
        roller = ShardRoller(task.output, task.source, task.prefix, task.options.shard_bytes, DOC_SCHEMA)
        counts = _read_records(task, roller)
    roller.flush()
    counts["rows_out"] = sum(s.rows for s in roller.written)
    record = TaskRecord(task=task.key, fingerprint="", outputs={"main": roller.written}, counts=counts)
    return task.output.commit(record)


# -- structured records ------------------------------------------------------------------------
def _scan(path: Path, fmt: str, scratch: Path) -> pl.LazyFrame:
    if fmt == "parquet":
        return pl.scan_parquet(path)
    if path.suffix.lower() in COMPRESSIONS:
        scratch.mkdir(parents=True, exist_ok=True)
        plain = scratch / f"{uuid.uuid4().hex}-{path.stem}"
        with open_maybe_compressed(path) as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        path = plain
    if fmt == "jsonl":
        return pl.scan_ndjson(path, infer_schema_length=10_000)
    separator = "\t" if fmt == "tsv" else ","
    # TSV files rarely quote; a stray " in a text must not swallow the rows after it
    return pl.scan_csv(path, separator=separator, quote_char=None if fmt == "tsv" else '"',
                       infer_schema_length=10_000, truncate_ragged_lines=True, encoding="utf8-lossy")


def _batches(frame: pl.LazyFrame, rows: int):
    """Batches of a lazy scan, streamed (Polars >= 1.33 has collect_batches; older: slices)."""
    if hasattr(frame, "collect_batches"):
        yield from frame.collect_batches(chunk_size=rows)
        return
    yield from frame.collect(engine="streaming").iter_slices(rows)


def _read_records(task: FilesTask, roller: ShardRoller) -> dict[str, int]:
    path = Path(task.paths[0])
    scratch = task.output.outputs["main"] / "_tmp"
    fetched_at = mtime_utc(path)
    offset = 0
    try:
        frame = _scan(path, task.fmt, scratch)
        for batch in _batches(frame, 50_000):
            docs = records_to_docs(batch, task.options, task.source, f"{task.source}:{path.name}",
                                   offset, fetched_at)
            offset += batch.height
            roller.add_frame(docs)
    except pl.exceptions.PolarsError as error:
        raise FilesError(f"{path}: cannot read as {task.fmt}: {error}") from None
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return {"records": offset}


# -- pages: HTML files and WARC captures ---------------------------------------------------------
def _read_pages(task: FilesTask, roller: ShardRoller) -> dict[str, int]:
    counts = {"pages": 0, "page_errors": 0}
    for name in task.paths:
        path = Path(name)
        rows = [_html_row(path, task)] if task.fmt == "html" else iter_warc_rows(path, task)
        for row in rows:
            counts["pages"] += 1
            counts["page_errors"] += row["error"] is not None
            roller.add_row(row)
    return counts


def _html_row(path: Path, task: FilesTask) -> dict:
    url = str(path)
    try:
        body = read_capped(path, task.options.max_bytes)
    except (OSError, EOFError, zlib.error) as error:
        return raw_row(url, task.source, error=f"unreadable file: {error}", fetched_at=mtime_utc(path))
    if body is None:
        return raw_row(url, task.source, status=200, content_type="text/html", fetched_at=mtime_utc(path),
                       error=f"body too large: over max_bytes {task.options.max_bytes} (decompressed)")
    return raw_row(url, task.source, status=200, content_type="text/html", body=body, fetched_at=mtime_utc(path))


def _headers_block(block: bytes) -> tuple[str, dict[str, str]]:
    lines = block.decode("utf-8", "replace").split("\r\n") if b"\r\n" in block else \
        block.decode("utf-8", "replace").split("\n")
    first, headers = lines[0], {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            key = key.strip()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return first, headers


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while pos < len(body):
        end = body.find(b"\r\n", pos)
        if end < 0:
            break
        size = int(body[pos:end].split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        out.append(body[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)


def _decode_content(body: bytes, encoding: str, max_bytes: int) -> bytes | None:
    encoding = encoding.lower().strip()
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
        decompressor = zlib.decompressobj(wbits)
        data = decompressor.decompress(body, max_bytes + 1)
        return None if len(data) > max_bytes else data
    return body


def iter_warc_rows(path: Path, task: FilesTask):
    """Raw rows of a WARC file's `response` and `resource` records (others are skipped)."""
    max_bytes = task.options.max_bytes
    with open_maybe_compressed(path) as stream:
        while True:
            line = stream.readline()
            if not line:
                return
            if not line.strip():
                continue
            if not line.startswith(b"WARC/"):
                raise FilesError(f"{path}: not a WARC file (record starts with {line[:20]!r})")
            head = bytearray()
            while True:
                line = stream.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                head += line
            _, warc = _headers_block(b"WARC\r\n" + bytes(head))
            warc = {k.lower(): v for k, v in warc.items()}
            length = int(warc.get("content-length", "0"))
            kind = warc.get("warc-type", "")
            keep = kind in ("response", "resource") and length <= max_bytes + 65536
            if keep:
                block = stream.read(length)
            else:
                remaining = length
                while remaining > 0:
                    remaining -= len(stream.read(min(remaining, 1 << 20)) or b"\0" * remaining)
                block = b""
            if kind not in ("response", "resource"):
                continue
            url = warc.get("warc-target-uri", "").strip("<>")
            try:
                fetched_at = datetime.fromisoformat(warc.get("warc-date", "").replace("Z", "+00:00"))
            except ValueError:
                fetched_at = mtime_utc(path)
            if not keep:
                yield raw_row(url, task.source, fetched_at=fetched_at,
                              error=f"body too large: record of {length} bytes > max_bytes {max_bytes}")
                continue
            yield _warc_row(url, kind, warc, block, task, fetched_at, max_bytes)


def _warc_row(url, kind, warc, block, task, fetched_at, max_bytes) -> dict:
    if kind == "resource":
        status, headers, body = 200, {}, block
        content_type = warc.get("content-type")
    else:
        split = block.find(b"\r\n\r\n")
        sep = 4
        if split < 0:
            split, sep = block.find(b"\n\n"), 2
        if split < 0:
            return raw_row(url, task.source, fetched_at=fetched_at, error="malformed WARC response record")
        status_line, headers = _headers_block(block[:split])
        body = block[split + sep:]
        try:
            status = int(status_line.split()[1])
        except (IndexError, ValueError):
            return raw_row(url, task.source, fetched_at=fetched_at, error=f"bad HTTP status line {status_line!r}")
        lower = {k.lower(): v for k, v in headers.items()}
        content_type = lower.get("content-type")
        if "chunked" in lower.get("transfer-encoding", "").lower():
            body = _dechunk(body)
        if lower.get("content-encoding"):
            try:
                body = _decode_content(body, lower["content-encoding"], max_bytes)
            except zlib.error as error:
                return raw_row(url, task.source, status=status, content_type=content_type,
                               fetched_at=fetched_at, error=f"bad content encoding: {error}")
    row = dict(status=status, content_type=content_type, fetched_at=fetched_at,
               headers=json.dumps(headers, ensure_ascii=False, sort_keys=True))
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if body is None or len(body) > max_bytes:
        return raw_row(url, task.source, **row, error=f"body too large: over max_bytes {max_bytes} (decompressed)")
    if media and media not in PAGE_TYPES:
        return raw_row(url, task.source, **row, error=f"skipped content type {media}")
    if status >= 400:
        return raw_row(url, task.source, **row, body=body, error=f"HTTP {status}")
    if status in (301, 302, 303, 307, 308):
        return raw_row(url, task.source, **row, error=f"redirect (HTTP {status})")
    return raw_row(url, task.source, **row, body=body)
