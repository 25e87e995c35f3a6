"""Chunk long documents into pieces of at most `max_tokens` tokens, cut where the text breaks.

A chunk ends at the last heading that fits in its token budget; if none fits, at the last
paragraph break, then the last line break, then the last sentence end, and only then between two
tokens. The text is cut, never rewritten: the chunks of a document, taken without their overlap,
rejoin to its text exactly (the whitespace at a cut stays with the chunk before it, or starts the
next one). With `overlap_tokens` every chunk after the first starts with the last tokens of the
one before it (`chunk_overlap` says how many characters of its text are that overlap).

Where the boundaries are (all vectorised in NumPy over the characters of a batch):
- heading: a line starting with `#` (Markdown), a line underlined with `===` or `---`
  (Markdown/reST), or a short standalone line (a paragraph of one line of at most 80 characters
  that starts with an upper-case letter and does not end in `. ! ? , ; :`), as extract writes
  the headings of HTML pages;
- paragraph: text after a blank line; line: text after a line break;
- sentence: text after `. ! ? …` and whitespace.
Token positions come from the tokenizer's offsets (`encode_batch`); the chunk rounds are NumPy
searches over all long documents of a batch at once. Every chunk is re-encoded alone to check
its count (a cut inside a word may encode differently); a document with a chunk over the limit
is chunked again with a budget smaller by the excess.

Columns added: `parent_id` (the document's id), `chunk_index` (0, 1, ...), `chunk_count`,
`chunk_start` (character offset of the chunk's own text in the document) and `chunk_overlap`.
A document that fits stays one row with its id; the chunks of a cut document get stable ids
(the first 16 hex digits of SHA-256 of `<parent id>#<chunk index>`). Only text rows are cut:
instruction and chat rows pass through as one chunk each.
Example: pipeline chunk --input out/clean --output out/chunks --max-tokens 512 --tokenizer gpt2
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from pipeline.errors import JobError, require_columns
from pipeline.hashing import doc_id
from pipeline.stage import Options as StageOptions
from pipeline.stage import ShardOutput, Stage, batch_starts
from pipeline.tokens import ENCODE_BATCH_ROWS, count_tokens, load_tokenizer, tokenizer_sha256

HEADING, PARAGRAPH, LINE, SENTENCE, TOKEN = range(5)
LEVEL_NAMES = ("heading", "paragraph", "line", "sentence", "token")
NO_BOUNDARY = np.uint8(255)
WHITESPACE = np.array([9, 10, 11, 12, 13, 32, 0x85, 0xA0, 0x2028, 0x2029, 0x3000], np.uint32)
SENTENCE_END = np.array([ord(c) for c in ".!?…。！？"], np.uint32)
TITLE_END = np.array([ord(c) for c in ".!?,;:"], np.uint32)
UNDERLINE = np.array([ord(c) for c in "=-"], np.uint32)
MAX_TITLE_CHARS = 80
MAX_RETRIES = 8
CHUNK_COLUMNS = ("parent_id", "chunk_index", "chunk_count", "chunk_start", "chunk_overlap")


class ChunkError(JobError):
    """A document cannot be cut within the budget (one character encodes to more tokens)."""


class Options(StageOptions):
    max_tokens: int = Field(512, ge=8)
    """Most tokens in a chunk (its overlap included)."""
    overlap_tokens: int = Field(0, ge=0)
    """Tokens of the previous chunk repeated at the start of the next one (0: none); at most
    half of max_tokens."""
    tokenizer: str | None = "gpt2"
    """A tokenizer.json path (or a folder holding one), or `gpt2` (bundled): chunking needs a
    real tokenizer's offsets, so there is no approximation here."""
    text_column: str = "text"
    """Column holding the text to cut."""
    batch_bytes: int = Field(2_000_000, ge=10_000)
    """Bytes of long documents cut at once within a shard: bounds a worker's memory (token
    offsets take about 60 bytes per character); the chunks do not depend on it."""

    @model_validator(mode="after")
    def _overlap_fits(self) -> Options:
        if self.overlap_tokens * 2 > self.max_tokens:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be at most half of "
                             f"max_tokens ({self.max_tokens})")
        if self.tokenizer is None:
            raise ValueError("chunk needs a tokenizer (a tokenizer.json path or `gpt2`)")
        return self

    def fingerprint_dict(self) -> dict[str, Any]:
        values = self.model_dump(mode="json")
        values.pop("batch_bytes")
        values["tokenizer_sha256"] = tokenizer_sha256(self.tokenizer)
        return values


@dataclass
class Spans:
    """Chunks of a batch of documents: row (index into the batch), chunk index, and character
    offsets of the chunk's own text [start, end) and of its overlap's start."""

    row: np.ndarray
    index: np.ndarray
    start: np.ndarray
    end: np.ndarray
    overlap_start: np.ndarray


def char_levels(codepoints: np.ndarray, doc_starts: np.ndarray) -> np.ndarray:
    """Per character, the strongest boundary that starts there (HEADING .. SENTENCE, or 255).

    codepoints: uint32 code points of the documents one after another; doc_starts: offsets of
    each document and the total length (len = documents + 1). A boundary is always a
    non-whitespace character with text before it in the same document.
    """
    n = len(codepoints)
    pos = np.arange(n, dtype=np.int64)
    lengths = np.diff(doc_starts)
    doc_start_of = np.repeat(doc_starts[:-1], lengths)
    ws = np.isin(codepoints, WHITESPACE)
    newline = codepoints == 10
    last_text = np.maximum.accumulate(np.where(ws, -1, pos))  # last non-ws at or before i
    prev_text = np.concatenate([[-1], last_text[:-1]])
    prev_text = np.where(prev_text >= doc_start_of, prev_text, -1)
    newlines_upto = np.concatenate([[0], np.cumsum(newline, dtype=np.int64)])
    gap_from = np.where(prev_text >= 0, prev_text + 1, doc_start_of)
    breaks_before = newlines_upto[pos] - newlines_upto[gap_from]
    starts_text = ~ws & (prev_text >= 0)
    after_gap = starts_text & (pos - prev_text >= 2)
    previous_char = codepoints[np.maximum(prev_text, 0)]

    levels = np.full(n, NO_BOUNDARY, np.uint8)
    levels[after_gap & np.isin(previous_char, SENTENCE_END)] = SENTENCE
    levels[starts_text & (breaks_before >= 1)] = LINE
    levels[starts_text & (breaks_before >= 2)] = PARAGRAPH

    # lines: [line_start, next line_start); their first and last non-whitespace characters
    line_start = np.flatnonzero(np.concatenate([[True], newline[:-1]]) | np.isin(pos, doc_starts[:-1]))
    line_end = np.concatenate([line_start[1:], [n]])
    next_text = np.minimum.accumulate(np.where(ws, n, pos)[::-1])[::-1]
    first = next_text[line_start]
    blank = first >= line_end
    first_cp = codepoints[np.minimum(first, n - 1)]
    last = last_text[line_end - 1]
    last_cp = codepoints[np.maximum(last, 0)]
    text_chars = np.add.reduceat(~ws, line_start)
    underline_chars = np.add.reduceat(np.isin(codepoints, UNDERLINE), line_start)
    doc_of_line = np.searchsorted(doc_starts, line_start, side="right") - 1
    same_doc_next = np.concatenate([doc_of_line[1:] == doc_of_line[:-1], [False]])
    same_doc_prev = np.concatenate([[False], doc_of_line[1:] == doc_of_line[:-1]])
    is_underline = ~blank & (text_chars >= 3) & (underline_chars == text_chars)
    blank_next = np.concatenate([blank[1:], [True]]) | ~same_doc_next
    blank_prev = np.concatenate([[True], blank[:-1]]) | ~same_doc_prev
    markdown = first_cp == ord("#")
    underlined = np.concatenate([is_underline[1:], [False]]) & same_doc_next & ~is_underline
    title = (blank_prev & blank_next & (line_end - line_start <= MAX_TITLE_CHARS + 1)
             & (first_cp >= ord("A")) & (first_cp <= ord("Z")) & ~np.isin(last_cp, TITLE_END))
    heading = ~blank & (markdown | underlined | title)
    heading_first = first[heading]
    heading_first = heading_first[starts_text[heading_first] & (breaks_before[heading_first] >= 1)]
    levels[heading_first] = HEADING
    return levels


def plan_chunks(
    token_starts: np.ndarray,
    token_doc_bounds: np.ndarray,
    token_levels: np.ndarray,
    first_budget: np.ndarray,
    next_budget: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy cuts for all documents at once: (doc, chunk index, first token, end token).

    token_starts: global character start of every token (documents one after another);
    token_doc_bounds: first token of each document and the total (len = documents + 1);
    token_levels: per token the boundary level it starts (255 for a token that shares its start
    character with the token before it: never a cut); budgets per document. Each round cuts one
    chunk of every unfinished document: at the last candidate of the strongest level inside the
    budget window (cur, cur + budget].
    """
    docs = len(token_doc_bounds) - 1
    lo, hi = token_doc_bounds[:-1].astype(np.int64), token_doc_bounds[1:].astype(np.int64)
    candidates = [np.flatnonzero(token_levels <= level) for level in range(TOKEN + 1)]
    cur = lo.copy()
    index = np.zeros(docs, np.int64)
    active = np.flatnonzero(cur < hi)
    out_doc, out_index, out_first, out_end = [], [], [], []
    while active.size:
        start = cur[active]
        budget = np.where(index[active] == 0, first_budget[active], next_budget[active])
        limit = start + budget
        cut = np.where(limit >= hi[active], hi[active], -1)
        for level_candidates in candidates:
            if cut.min() >= 0 or level_candidates.size == 0:
                break
            j = np.searchsorted(level_candidates, limit, side="right") - 1
            found = np.where(j >= 0, level_candidates[np.maximum(j, 0)], -1)
            cut = np.where((cut < 0) & (found > start), found, cut)
        # one character that alone encodes to more tokens than the budget: cut after it
        stuck = cut < 0
        if stuck.any():
            every = candidates[TOKEN]
            j = np.searchsorted(every, start, side="right")
            after = np.where(j < every.size, every[np.minimum(j, max(every.size - 1, 0))], hi[active])
            cut = np.where(stuck, np.minimum(after, hi[active]), cut)
        out_doc.append(active)
        out_index.append(index[active].copy())
        out_first.append(start)
        out_end.append(cut)
        cur[active] = cut
        index[active] += 1
        active = active[cut < hi[active]]
    if not out_doc:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    return tuple(np.concatenate(parts) for parts in (out_doc, out_index, out_first, out_end))


def chunk_texts(texts: list[str], spec: str, max_tokens: int, overlap_tokens: int, encodings: list | None = None) -> Spans:
    """Chunk spans of documents longer than max_tokens (all given texts are cut; the caller
    passes only the long ones, with their encodings when it has them). Offsets are in characters
    of each text."""
    docs = len(texts)
    lengths = np.fromiter((len(t) for t in texts), np.int64, docs)
    doc_starts = np.concatenate([[0], np.cumsum(lengths)])
    codepoints = np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32)
    levels = char_levels(codepoints, doc_starts)
    if encodings is None:
        encodings = load_tokenizer(spec).encode_batch(texts, add_special_tokens=False)
    counts = np.fromiter((len(e) for e in encodings), np.int64, docs)
    # (start, end) pairs flattened in C (no Python frame per token), starts taken
    flat = chain.from_iterable(chain.from_iterable(e.offsets for e in encodings))
    offsets = np.fromiter(flat, np.int64, 2 * int(counts.sum()))[::2]
    token_doc_bounds = np.concatenate([[0], np.cumsum(counts)])
    token_doc = np.repeat(np.arange(docs), counts)
    token_starts = offsets + doc_starts[token_doc]
    # a token is a cut candidate only where it starts a new character (byte-level tokens of one
    # character share their offsets) and is not a document's first token
    running = np.maximum.accumulate(token_starts) if token_starts.size else token_starts
    distinct = np.concatenate([[False], token_starts[1:] > running[:-1]]) if token_starts.size else running.astype(bool)
    distinct[token_doc_bounds[:-1][counts > 0]] = False
    token_levels = np.full(token_starts.size, NO_BOUNDARY, np.uint8)
    idx = np.flatnonzero(distinct)
    if idx.size:
        # a token's level is the strongest boundary among the characters it covers up to the
        # next cut candidate (GPT-2's " Next" starts at the space before the sentence)
        token_levels[idx] = np.minimum.reduceat(levels, token_starts[idx])
        token_levels[idx] = np.minimum(token_levels[idx], TOKEN)

    first_budget = np.full(docs, max_tokens, np.int64)
    next_budget = np.full(docs, max_tokens - overlap_tokens, np.int64)
    for _ in range(MAX_RETRIES):
        doc, index, first, end = plan_chunks(token_starts, token_doc_bounds, token_levels,
                                             first_budget, next_budget)
        base = doc_starts[doc]
        start = np.where(index == 0, 0, token_starts[np.minimum(first, token_starts.size - 1)] - base)
        stop = np.where(end >= token_doc_bounds[doc + 1], lengths[doc],
                        token_starts[np.minimum(end, token_starts.size - 1)] - base)
        overlap_token = np.maximum(first - overlap_tokens, token_doc_bounds[doc])
        overlap_start = np.where(index == 0, 0, token_starts[np.minimum(overlap_token, token_starts.size - 1)] - base)
        spans = Spans(doc, index, start, stop, overlap_start)
        pieces = pl.DataFrame({"text": texts}).with_row_index("_row").join(
            pl.DataFrame({"_row": doc.astype(np.uint32), "_from": overlap_start, "_to": stop}), on="_row",
            maintain_order="right",
        ).select(pl.col("text").str.slice(pl.col("_from"), pl.col("_to") - pl.col("_from")))["text"]
        real = count_tokens(pieces, spec).astype(np.int64)
        excess = real - max_tokens
        over = excess > 0
        if not over.any():
            return spans
        worst = np.zeros(docs, np.int64)
        np.maximum.at(worst, doc[over], excess[over])
        first_budget -= worst
        next_budget -= worst
        if (next_budget[worst > 0] <= 0).any() or (first_budget[worst > 0] <= 0).any():
            break
    bad = int(doc[over][0])
    raise ChunkError(f"chunk: document {bad} of the batch cannot be cut into pieces of at most "
                     f"{max_tokens} tokens (a piece of {int(real[over][0])}); raise max_tokens")


def chunk_frame(table: pl.DataFrame, options: Options) -> pl.DataFrame:
    """Every row of `table` as one or more chunk rows (see the module docstring)."""
    text = options.text_column
    tokenizer_spec = options.tokenizer
    is_text = pl.col("kind").fill_null("text") == "text" if "kind" in table.columns else pl.lit(True)
    rendered = table.select(pl.when(is_text).then(pl.col(text)).otherwise(None).fill_null("").alias("t"))["t"]
    tokenizer = load_tokenizer(tokenizer_spec)
    # one encoding (with offsets) of every row, batch by batch: the counts say which rows are
    # long, and the long rows' offsets are where they can be cut
    lengths = rendered.str.len_bytes().to_numpy()
    starts = batch_starts(lengths, ENCODE_BATCH_ROWS, options.batch_bytes).tolist()
    stops = [*starts[1:], len(rendered)]
    parts, long_parts = [], []
    for a, b in zip(starts, stops, strict=True):
        encodings = tokenizer.encode_batch(rendered[a:b].to_list(), add_special_tokens=False)
        counts = np.fromiter((len(e) for e in encodings), np.int64, len(encodings))
        long_in_batch = np.flatnonzero(counts > options.max_tokens)
        if long_in_batch.size == 0:
            continue
        long_parts.append(long_in_batch + a)
        spans = chunk_texts(rendered[a:b].gather(long_in_batch).to_list(), tokenizer_spec, options.max_tokens,
                            options.overlap_tokens, [encodings[i] for i in long_in_batch])
        parts.append(pl.DataFrame({
            "_row": (long_in_batch + a)[spans.row].astype(np.int64), "chunk_index": spans.index,
            "_start": spans.start, "_end": spans.end, "_from": spans.overlap_start,
        }))
    long_rows = np.concatenate(long_parts) if long_parts else np.zeros(0, np.int64)
    whole = np.setdiff1d(np.arange(table.height), long_rows)
    lengths = table[text].str.len_chars().fill_null(0).to_numpy()[whole].astype(np.int64)
    parts.append(pl.DataFrame({"_row": whole.astype(np.int64), "chunk_index": np.zeros(whole.size, np.int64),
                               "_start": np.zeros(whole.size, np.int64), "_end": lengths,
                               "_from": np.zeros(whole.size, np.int64)}))
    spans = pl.concat(parts).sort("_row", "chunk_index")
    chunked = (spans.join(table.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64)),
                          on="_row", maintain_order="left")
               .with_columns(pl.len().over("_row").cast(pl.UInt32).alias("chunk_count")))
    cut = pl.col("chunk_count") > 1
    chunked = chunked.with_columns(
        pl.col("id").alias("parent_id"),
        pl.when(cut).then(doc_id(pl.format("{}#{}", pl.col("id"), pl.col("chunk_index"))))
        .otherwise(pl.col("id")).alias("id"),
        pl.when(cut).then(pl.col(text).str.slice(pl.col("_from"), pl.col("_end") - pl.col("_from")))
        .otherwise(pl.col(text)).alias(text),
        pl.col("chunk_index").cast(pl.UInt32),
        pl.col("_start").cast(pl.UInt64).alias("chunk_start"),
        (pl.col("_start") - pl.col("_from")).cast(pl.UInt32).alias("chunk_overlap"),
    )
    keep = [c for c in table.columns if c not in CHUNK_COLUMNS]
    return chunked.select(*keep, *CHUNK_COLUMNS)


def chunk_shard(frame: pl.LazyFrame, options: Options) -> ShardOutput:
    """Per-shard transform: documents in, chunks out (see the module docstring)."""
    table = frame.collect()
    out = chunk_frame(table, options)
    cut_docs = int(out.filter(pl.col("chunk_count") > 1)["parent_id"].n_unique())
    return ShardOutput(frames={"main": out}, counts={"documents_cut": cut_docs, "chunks": out.height})


def rejoin(chunks: pl.DataFrame, text_column: str = "text") -> pl.DataFrame:
    """The documents back from their chunks (overlap removed): `parent_id`, `text`. For checks."""
    return (chunks.sort("parent_id", "chunk_index")
            .group_by("parent_id", maintain_order=True)
            .agg(pl.col(text_column).str.slice(pl.col("chunk_overlap").cast(pl.Int64)).str.join("")))


__all__ = ["Options", "chunk_frame", "chunk_shard", "chunk_texts", "char_levels", "plan_chunks", "rejoin"]


class Chunk(Stage):
    """See the module docstring."""

    name = "chunk"
    Options = Options
    kinds = ("text", "instruction", "chat")  # only text rows are cut; records pass through
    transform = staticmethod(chunk_shard)

    def check(self, schema: dict, dataset: Path) -> None:
        require_columns(self.name, dataset, schema, ["id", self.options.text_column],
                        hint="set --text-column (job file: chunk.text_column)")


def run(inputs: list[Path], output: Path, options: Options, engine, fresh: bool = False):
    """Chunk every input shard (see the module docstring)."""
    return Chunk(options).run(inputs, output, engine, fresh=fresh)
