"""Local files: CSV/TSV, JSONL, JSON, Parquet → documents or instruction/chat records; HTML
files and WARC captures → raw pages.

One task per structured file or WARC file, one per `html_files_per_task` HTML files; tasks
run on the engine's workers and are resumable (a finished file is not read again). JSONL and
CSV are streamed in blocks of whole lines (JSONL: Polars parses a block at once, and only a
block that fails is parsed line by line to find its bad lines; CSV: pyarrow's streaming reader,
every field as bytes, then checked as UTF-8 column by column). A malformed line (bad JSON,
bytes that are not UTF-8, a ragged CSV row) goes to rejected/<output>/ with file, line and
reason (`strict`: the task fails naming them). An empty file is zero rows. Compressed files
(.gz, .bz2) are streamed through a decompressor. Shards roll at `shard_mb` whatever the block.
"""

from __future__ import annotations

import bz2
import glob as globlib
import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

from pipeline.dataset import StageOutput, TaskRecord
from pipeline.errors import InputError, JobError
from pipeline.fetch.options import FilesSource
from pipeline.fetch.records import RecordError, records_to_docs
from pipeline.fetch.writer import DOC_SCHEMA, RAW_SCHEMA, ShardRoller, raw_row
from pipeline.schema import FETCHED_AT

FORMATS = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
    ".parquet": "parquet", ".html": "html", ".htm": "html", ".xhtml": "html", ".warc": "warc",
}
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open}
PAGE_TYPES = ("text/html", "application/xhtml+xml", "text/plain")


class FilesError(InputError, ValueError):
    """A file cannot be read as the format it claims, or (strict) holds a malformed line or an
    invalid record; the message names the file and the line (exit 3)."""


def file_format(path: Path, forced: str = "auto") -> str | None:
    if forced != "auto":
        return forced
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    return FORMATS.get(suffixes[-1]) if suffixes else None


def expand_files(source: FilesSource) -> list[tuple[Path, str]]:
    """(path, format) of every file the source's patterns match, sorted, each once."""

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
        raise JobError(f"fetch files: no readable file matches {source.glob} "
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
    record_columns: bool = False  # text documents written with the record columns (a mixed run)


def read_files(source: FilesSource, found: list[tuple[Path, str]], output: StageOutput, task: str,
               name: str, engine, record_columns: bool = False) -> tuple[list[TaskRecord], dict]:
    """Plan one task per structured/WARC file and per batch of HTML files; run the pending ones."""
    tasks: list[FilesTask] = []
    html = [str(p) for p, fmt in found if fmt == "html"]
    for index, (path, fmt) in enumerate(found):
        if fmt != "html":
            tasks.append(FilesTask(f"{task}:{path}", [str(path)], fmt, source, output, name,
                                   f"{task}-f{index:06d}", record_columns))
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
        roller.flush()
        outputs = {"main": roller.written}
    else:
        roller = ShardRoller(task.output, task.source, task.prefix, task.options.shard_bytes, DOC_SCHEMA)
        rejects = ShardRoller(task.output, task.source, task.prefix, task.options.shard_bytes,
                              REJECTED_SCHEMA, name="rejected")
        counts = _read_records(task, roller, rejects)
        roller.flush()
        rejects.flush()
        outputs = {"main": roller.written, "rejected": rejects.written}
    counts["rows_out"] = sum(s.rows for s in roller.written)
    record = TaskRecord(task=task.key, fingerprint="", outputs=outputs, counts=counts)
    return task.output.commit(record)


# -- structured records ------------------------------------------------------------------------
BLOCK_BYTES = 8 << 20  # bytes of a JSONL/CSV file parsed at once (then cut into shard_mb shards)
BATCH_ROWS = 50_000  # rows of a Parquet file or JSON array mapped at once

# what fetch writes to rejected/<output>/: a line it could not parse, or a record that failed
# validation, with where it was and why; `record` is the line (undecodable bytes as \xNN
# escapes, never U+FFFD) or the record's fields as JSON
REJECTED_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "source": pl.String(),
    "fetched_at": FETCHED_AT,
    "file": pl.String(),
    "line": pl.Int64(),
    "reason": pl.String(),
    "record": pl.String(),
}


@dataclass
class Malformed:
    """A line (or record) that could not be parsed: 1-based line, exact reason, its text."""

    line: int | None
    reason: str
    record: str


@dataclass
class ParsedBatch:
    """Parsed records of one block of a file, the line (JSONL, CSV) or record number (JSON
    array, Parquet) of each row, and what could not be parsed."""

    frame: pl.DataFrame
    lines: np.ndarray
    malformed: list[Malformed]


def _shown(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _line_spans(block: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and end (exclusive, newline excluded) of each line of a block, and whether it holds
    more than whitespace; vectorised over the bytes."""
    buf = np.frombuffer(block, np.uint8)
    newlines = np.flatnonzero(buf == 10)
    ends = newlines if block.endswith(b"\n") else np.append(newlines, len(block))
    starts = np.concatenate([[0], newlines + 1])[:len(ends)]
    lengths = ends - starts
    # a line whose first byte is above 0x20 holds more than whitespace; only the rare lines
    # that start with whitespace (indented, "\r" of a blank CRLF line) are looked at one by one
    first = buf[np.minimum(starts, max(len(buf) - 1, 0))] if len(buf) else np.zeros(0, np.uint8)
    solid = (lengths > 0) & (first > 32)
    for index in np.flatnonzero((lengths > 0) & ~solid):
        solid[index] = bool(block[starts[index]:ends[index]].strip())
    return starts, ends, solid


def _invalid_utf8_lines(block: bytes, starts: np.ndarray, ends: np.ndarray) -> dict[int, str]:
    """Line index → reason for every line holding bytes that are not UTF-8 (one C-speed decode
    of the block when it is clean; each bad line costs one more decode of the rest)."""
    bad: dict[int, str] = {}
    position = 0
    while position < len(block):
        try:
            block[position:].decode("utf-8")
            break
        except UnicodeDecodeError as error:
            at = position + error.start
            index = int(np.searchsorted(ends, at))
            bad[index] = f"invalid UTF-8: byte 0x{block[at]:02x} at column {at - int(starts[index]) + 1}"
            position = int(ends[index]) + 1
    return bad


def _without_lines(block: bytes, starts: np.ndarray, ends: np.ndarray, drop: list[int],
                   lo: int = 0, hi: int | None = None) -> bytes:
    """The bytes of lines lo..hi-1 of a block, without the lines in `drop`."""
    hi = len(ends) if hi is None else hi
    first, last = int(starts[lo]), min(int(ends[hi - 1]) + 1, len(block))
    pieces, position = [], first
    for index in sorted(i for i in drop if lo <= i < hi):
        pieces.append(block[position:int(starts[index])])
        position = int(ends[index]) + 1
    pieces.append(block[position:last])
    return b"".join(pieces)


def _read_ndjson(data: bytes, infer_rows: int | None = 10_000) -> pl.DataFrame:
    """Records of whole JSON lines; types inferred from the first `infer_rows` (None: all)."""
    return pl.read_ndjson(io.BytesIO(data), infer_schema_length=infer_rows)


BISECT_LINES = 64  # a failing run of lines at most this long is parsed line by line


def _parse_lines(path: Path, first_line: int, block: bytes, starts: np.ndarray, ends: np.ndarray, solid: np.ndarray,
                 bad: dict[int, str], lo: int, hi: int, frames: list[pl.DataFrame]) -> None:
    """Parse lines lo..hi-1 with Polars; a run that fails is halved until it is short, and a
    short failing run is parsed line by line (json) to find its bad lines, which are left out
    (added to `bad`). Frames are appended in line order."""
    if not solid[lo:hi].any():
        return
    try:
        frames.append(_read_ndjson(_without_lines(block, starts, ends, list(bad), lo, hi)))
        return
    except pl.exceptions.PolarsError:
        pass
    if hi - lo > BISECT_LINES:
        middle = (lo + hi) // 2
        _parse_lines(path, first_line, block, starts, ends, solid, bad, lo, middle, frames)
        _parse_lines(path, first_line, block, starts, ends, solid, bad, middle, hi, frames)
        return
    for index in range(lo, hi):
        if not solid[index] or index in bad:
            continue
        try:
            value = json.loads(block[starts[index]:ends[index]])
        except json.JSONDecodeError as error:
            bad[index] = f"invalid JSON at column {error.colno}: {error.msg}"
            continue
        if not isinstance(value, dict):
            bad[index] = f"not a JSON object (a JSON {type(value).__name__})"
    if all(index in bad or not solid[index] for index in range(lo, hi)):
        return
    try:  # every line left parses on its own: a type changing inside the run is what is left
        frames.append(_read_ndjson(_without_lines(block, starts, ends, list(bad), lo, hi), infer_rows=None))
    except pl.exceptions.PolarsError as error:
        raise FilesError(f"{path}: lines {first_line + lo}-{first_line + hi - 1}: cannot read as jsonl: {error}") from None


def _jsonl_block(path: Path, block: bytes, first_line: int) -> ParsedBatch:
    """One block of whole lines: Polars parses it at once; in a block that fails, the failing
    runs of lines are halved until short, and only those are parsed line by line."""
    starts, ends, solid = _line_spans(block)
    bad = _invalid_utf8_lines(block, starts, ends)
    frames: list[pl.DataFrame] = []
    _parse_lines(path, first_line, block, starts, ends, solid, bad, 0, len(ends), frames)
    frame = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else (frames[0] if frames else pl.DataFrame())
    kept = solid.copy()
    kept[list(bad)] = False
    lines = first_line + np.flatnonzero(kept)
    if frame.height != len(lines):
        raise FilesError(f"{path}: lines {first_line}-{first_line + len(ends) - 1}: {frame.height} "
                         f"records parsed from {len(lines)} lines")
    malformed = [Malformed(first_line + i, reason, _shown(block[starts[i]:ends[i]])) for i, reason in sorted(bad.items())]
    return ParsedBatch(frame, lines, malformed)


def _jsonl_batches(path: Path):
    """Blocks of about BLOCK_BYTES cut at line ends, streamed (through the decompressor)."""
    with open_maybe_compressed(path) as stream:
        first_line, carry = 1, b""
        while True:
            chunk = stream.read(BLOCK_BYTES)
            data = carry + chunk if carry else chunk
            if chunk:
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # one line longer than a block: read on
                    carry = data
                    continue
                block, carry = data[:cut], data[cut:]
            else:
                block, carry = data, b""
            if block:
                yield _jsonl_block(path, block, first_line)
                first_line += block.count(b"\n") + (not block.endswith(b"\n"))
            if not chunk:
                return


def _json_batches(path: Path):
    """A JSON array of records. It is one value, so it is parsed whole (a file per task; use
    JSONL for files larger than a worker's memory); a file that does not parse is rejected
    whole, with the line of the error."""
    with open_maybe_compressed(path) as stream:
        data = stream.read()
    if not data.strip():
        return
    whole = "(a JSON array is one value: nothing of the file was read)"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        yield ParsedBatch(pl.DataFrame(), np.zeros(0, np.int64), [Malformed(
            line, f"invalid UTF-8: byte 0x{data[error.start]:02x} at column {column} {whole}", "")])
        return
    if not data.lstrip().startswith(b"["):
        yield ParsedBatch(pl.DataFrame(), np.zeros(0, np.int64), [Malformed(
            1, "not a JSON array of records (write one record per line as .jsonl)", _shown(data[:1000]))])
        return
    try:
        frame = pl.read_json(io.BytesIO(data), infer_schema_length=None)
        malformed: list[Malformed] = []
        numbers = np.arange(1, frame.height + 1)
    except pl.exceptions.PolarsError:
        try:
            values = json.loads(data)
        except json.JSONDecodeError as error:
            yield ParsedBatch(pl.DataFrame(), np.zeros(0, np.int64), [Malformed(
                error.lineno, f"invalid JSON at column {error.colno}: {error.msg} {whole}", "")])
            return
        # parsed, but Polars refused it: some elements are not objects (rare; Python objects here)
        objects = [i for i, v in enumerate(values) if isinstance(v, dict)]
        malformed = [Malformed(i + 1, f"record {i + 1} is not a JSON object (a JSON {type(v).__name__})",
                               json.dumps(v, ensure_ascii=False)) for i, v in enumerate(values) if not isinstance(v, dict)]
        frame = pl.from_dicts([values[i] for i in objects], infer_schema_length=None) if objects else pl.DataFrame()
        numbers = np.array(objects, np.int64) + 1
    yield ParsedBatch(pl.DataFrame(), np.zeros(0, np.int64), malformed)
    for start in range(0, frame.height, BATCH_ROWS):
        yield ParsedBatch(frame.slice(start, BATCH_ROWS), numbers[start:start + BATCH_ROWS], [])


def _parquet_batches(path: Path):
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        return
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for a broken file
        raise FilesError(f"{path}: cannot read as parquet: {error}") from None
    first = 1
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
        frame = pl.from_arrow(batch)
        yield ParsedBatch(frame, np.arange(first, first + frame.height), [])
        first += frame.height


class _LineFinder:
    """Finds the line where a row's text starts, reading the (decompressed) file forward once:
    used for the rare rows the CSV parser skips, which it hands over without a line number."""

    def __init__(self, path: Path):
        self.stream = open_maybe_compressed(path)
        self.buffer = b"\n"  # a row starts after a newline; the file's start counts as one
        self.line_of_buffer = 0  # line number of the buffer's first byte
        self.position = 0

    def find(self, text: str) -> int | None:
        needle = b"\n" + text.encode("utf-8", "surrogateescape")
        while True:
            at = self.buffer.find(needle, self.position)
            if at >= 0:
                line = self.line_of_buffer + self.buffer.count(b"\n", 0, at) + 1
                keep = at + 1  # forget what lies before this row
                self.line_of_buffer += self.buffer.count(b"\n", 0, keep)
                self.buffer, self.position = self.buffer[keep:], 1
                return line
            chunk = self.stream.read(BLOCK_BYTES)
            if not chunk:
                return None
            keep = max(0, len(self.buffer) - len(needle))
            self.line_of_buffer += self.buffer.count(b"\n", 0, keep)
            self.buffer, self.position = self.buffer[keep:] + chunk, 0

    def close(self) -> None:
        self.stream.close()


def _undecodable_rows(table, delimiter: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Rows of a batch (all columns binary) holding bytes that are not UTF-8: a mask, each bad
    row's reason and its cells rejoined. Each column is checked by one Arrow cast; only a column
    whose cast fails is looked at cell by cell."""
    import pyarrow as pa

    bad = np.zeros(table.num_rows, bool)
    reasons: dict[int, str] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            column.cast(pa.string())
            continue
        except pa.ArrowInvalid:
            pass
        for row, value in enumerate(column.to_pylist()):
            if value is None or row in reasons:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as error:
                reasons[row] = (f"invalid UTF-8 in field {name!r}: byte 0x{value[error.start]:02x} "
                                f"at position {error.start + 1}")
                bad[row] = True
    rows = sorted(reasons)
    cells = [table.column(i).take(rows).to_pylist() for i in range(table.num_columns)] if rows else []
    shown = [delimiter.join(_shown(c[k] or b"") for c in cells) for k in range(len(rows))]
    return bad, [reasons[r] for r in rows], shown


def _blank_lines(path: Path, quoted: bool) -> np.ndarray:
    """Line numbers (from 1) of the empty lines of a CSV/TSV file that lie outside quoted fields
    (the parser skips them, so rows after one start a line further down). One streamed pass,
    vectorised per block: a newline ends a record when the quotes before it are even."""
    found: list[np.ndarray] = []
    lines_before, odd_quotes, carry = 0, 0, b""
    with open_maybe_compressed(path) as stream:
        while True:
            chunk = stream.read(BLOCK_BYTES)
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            block, carry = data[:cut], data[cut:]
            buf = np.frombuffer(block, np.uint8)
            newlines = np.flatnonzero(buf == 10)
            if len(newlines):
                starts = np.concatenate([[0], newlines[:-1] + 1])
                length = newlines - starts
                empty = (length == 0) | ((length == 1) & (buf[np.maximum(newlines - 1, 0)] == 13))
                if quoted:  # quotes before each empty line's newline, from the (few) quote positions
                    quotes = np.flatnonzero(buf == 34)
                    candidates = np.flatnonzero(empty)
                    outside = (np.searchsorted(quotes, newlines[candidates]) + odd_quotes) % 2 == 0
                    empty = np.zeros_like(empty)
                    empty[candidates[outside]] = True
                    odd_quotes = (odd_quotes + len(quotes)) % 2
                found.append(lines_before + np.flatnonzero(empty) + 1)
                lines_before += len(newlines)
            if not chunk:
                break
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _csv_batches(path: Path, fmt: str):
    """CSV/TSV in blocks, every field read as bytes: a row with more or fewer fields than the
    header and a row holding bytes that are not UTF-8 are malformed (with their line), the
    rest become strings."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    with open_maybe_compressed(path) as probe:
        if not probe.read(1 << 16).strip():
            return
    delimiter = "\t" if fmt == "tsv" else ","
    skipped: list[tuple[str, int, int]] = []

    def skip_ragged(row) -> str:
        skipped.append((row.text, row.actual_columns, row.expected_columns))
        return "skip"

    # TSV files rarely quote; a stray " in a text must not swallow the rows after it
    parse = pcsv.ParseOptions(delimiter=delimiter, quote_char=False if fmt == "tsv" else '"',
                              newlines_in_values=fmt != "tsv", invalid_row_handler=skip_ragged)
    read = pcsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False)
    try:
        with open_maybe_compressed(path) as stream:
            names = pcsv.open_csv(stream, read_options=read, parse_options=parse).schema.names
    except pa.ArrowInvalid as error:
        raise FilesError(f"{path}: line 1: cannot read the header as {fmt}: {error}") from None
    skipped.clear()
    convert = pcsv.ConvertOptions(column_types={n: pa.binary() for n in names}, strings_can_be_null=True,
                                  quoted_strings_can_be_null=False)
    finder = _LineFinder(path)
    blank = _blank_lines(path, quoted=fmt != "tsv")
    header_line = 1 + int(np.sum(blank == np.arange(1, len(blank) + 1)))  # after leading blank lines
    next_line = header_line + 1
    # rows start further down after a skipped line (blank, or a ragged row): (line, lines it spans)
    pending = [(int(line), 1) for line in blank if line > header_line]
    try:
        with open_maybe_compressed(path) as stream:
            reader = pcsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
            for batch in reader:
                malformed = []
                for text, actual, expected in skipped:
                    line = finder.find(text)
                    malformed.append(Malformed(line, f"ragged row: {actual} fields, the header has {expected}", text))
                    if line is not None:
                        pending.append((line, 1 + text.count("\n")))
                skipped.clear()
                pending.sort()
                table = pa.Table.from_batches([batch])
                spans = np.ones(table.num_rows, np.int64)
                for column in table.columns:  # a quoted field may hold line breaks
                    spans += pc.fill_null(pc.count_substring(column, "\n"), 0).to_numpy(zero_copy_only=False)
                lines = next_line + np.concatenate([[0], np.cumsum(spans)[:-1]]).astype(np.int64)
                end = int(lines[-1] + spans[-1]) if len(lines) else next_line
                while pending and pending[0][0] < end:  # skipped lines among this batch's rows
                    line, span = pending.pop(0)
                    lines[lines >= line] += span
                    end += span
                next_line = end
                bad, reasons, shown = _undecodable_rows(table, delimiter)
                malformed += [Malformed(int(line), reason, text)
                              for line, reason, text in zip(lines[bad], reasons, shown, strict=True)]
                good = table.filter(pa.array(~bad)) if bad.any() else table
                good = good.cast(pa.schema([(n, pa.string()) for n in names]))
                yield ParsedBatch(pl.from_arrow(good), lines[~bad], malformed)
            if skipped:  # ragged rows after the last batch
                yield ParsedBatch(pl.DataFrame(), np.zeros(0, np.int64), [
                    Malformed(finder.find(t), f"ragged row: {a} fields, the header has {e}", t) for t, a, e in skipped])
    except pa.ArrowInvalid as error:
        raise FilesError(f"{path}: after line {next_line - 1}: cannot read as {fmt}: {error}") from None
    finally:
        finder.close()


def record_batches(path: Path, fmt: str):
    """ParsedBatch after ParsedBatch of a structured file (empty files give none)."""
    readers = {"jsonl": _jsonl_batches, "json": _json_batches, "parquet": _parquet_batches}
    return readers[fmt](path) if fmt in readers else _csv_batches(path, fmt)


def _generalised(reason: pl.Expr) -> pl.Expr:
    """A reason without its turn numbers, quoted values, columns and bytes, to count by."""
    return (reason.str.replace_all(r"\b(turn|column|position|fields?|header has) \d+", "$1 N")
            .str.replace_all(r"'[^']*'", "'…'").str.replace_all(r"0x[0-9a-f]{2}", "0x..")
            .str.replace_all(r"^ragged row: \d+", "ragged row: N"))


def _read_records(task: FilesTask, roller: ShardRoller, rejects: ShardRoller) -> dict[str, int]:
    from pipeline.fetch.records import _jsonable, records_to_kind
    from pipeline.records import RecordFormatError, with_record_columns

    options = task.options
    path = Path(task.paths[0])
    fetched_at = mtime_utc(path)
    key_prefix = f"{task.source}:{path.name}"
    counts = {"records": 0, "malformed": 0, "invalid": 0}

    def reject(ids, lines, reasons, records) -> None:
        frame = pl.DataFrame({"id": ids, "source": task.source, "file": str(path), "line": lines,
                              "reason": reasons, "record": records},
                             schema_overrides={"id": pl.String, "line": pl.Int64, "record": pl.String})
        frame = frame.with_columns(pl.lit(fetched_at).cast(FETCHED_AT).alias("fetched_at"))
        for reason, n in frame.group_by(_generalised(pl.col("reason"))).len().iter_rows():
            counts[f"dropped:{reason}"] = counts.get(f"dropped:{reason}", 0) + n
        rejects.add_frame(frame.select(list(REJECTED_SCHEMA)).cast(REJECTED_SCHEMA), cut=True)

    try:
        for batch in record_batches(path, task.fmt):
            if batch.malformed:
                if options.strict:
                    first = batch.malformed[0]
                    raise FilesError(f"{path}:{first.line}: {first.reason}")
                counts["malformed"] += len(batch.malformed)
                reject([None] * len(batch.malformed), [m.line for m in batch.malformed],
                       [m.reason for m in batch.malformed], [m.record for m in batch.malformed])
            if not batch.frame.height:
                continue
            offset = counts["records"]
            counts["records"] += batch.frame.height
            if options.record_kind == "text":
                docs = records_to_docs(batch.frame, options, task.source, key_prefix, offset, fetched_at)
                roller.add_frame(with_record_columns(docs) if task.record_columns else docs, cut=True)
                continue
            docs = records_to_kind(batch.frame, options, options.record_kind, options.record_format,
                                   task.source, key_prefix, offset, fetched_at)
            invalid = docs["reason"].is_not_null().to_numpy()
            if invalid.any():
                lines = batch.lines[invalid]
                if options.strict:
                    raise FilesError(f"{path}:{int(lines[0])}: {docs['reason'].filter(pl.Series(invalid))[0]}")
                counts["invalid"] += int(invalid.sum())
                mask = pl.Series(invalid)
                source_rows = _jsonable(batch.frame.filter(mask))
                records = source_rows.select(pl.struct(pl.all()).struct.json_encode()).to_series()
                bad = docs.filter(mask)
                reject(bad["id"], lines.tolist(), bad["reason"], records)
                docs = docs.filter(~mask)
            roller.add_frame(docs.drop("reason"), cut=True)
    except pl.exceptions.PolarsError as error:
        raise FilesError(f"{path}: cannot read as {task.fmt}: {error}") from None
    except (RecordError, RecordFormatError) as error:
        raise FilesError(f"{path}: {error}") from None
    return counts


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
