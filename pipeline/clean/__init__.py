"""Clean documents: normalise text, handle missing values, mask PII and drop low-quality rows.

Reads document datasets (DOC_SCHEMA plus any extra columns) and writes the same columns with
`text` cleaned, shard by shard, every step a Polars expression over whole columns. In order:
per-column missing-value and type policies (job file `[[clean.columns]]`), text
normalisation (control characters, mojibake, markup, NFKC, special characters, case,
whitespace), PII masking (<EMAIL>, <PHONE>, <IP_ADDRESS>, <CREDIT_CARD>, <IBAN>), then the
Gopher / C4 / FineWeb quality rules. A dropped row goes to rejected/<output>/ with `reason` =
the first rule it fails; PII counts per kind are in the stage's details. Instruction and chat
records (a `kind` column) are cleaned turn by turn (pipeline.clean.records). Example:
pipeline clean --input out/docs --output out/clean --min-words 20 --no-mask-phone
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field, PrivateAttr, field_validator, model_validator

from pipeline.clean.language import detect_language
from pipeline.clean.missing import RAW, ColumnPolicy, apply_policies, global_fills
from pipeline.clean.normalize import normalize_text
from pipeline.clean.pii import KINDS, mask_pii
from pipeline.clean.quality import (
    NGRAM_STATS,
    add_ngram_stats,
    c4_line_filter,
    first_failing_rule,
    needed_stats,
    quality_stats,
)
from pipeline.clean.records import clean_record_batch
from pipeline.engine import Engine
from pipeline.errors import require_columns
from pipeline.records import KINDS as RECORD_KINDS
from pipeline.stage import REASON, ShardOutput, Stage, StageResult, StageRun, batch_starts
from pipeline.stage import Options as StageOptions

__all__ = ["Clean", "Options", "run", "clean_shard", "clean_frame", "ColumnPolicy"]

class Options(StageOptions):
    text_column: str = "text"
    """Column holding the text to clean and judge."""
    columns: list[ColumnPolicy] = []
    """Per-column missing-value and type policies (job file only: `[[clean.columns]]` tables
    with `column`, `dtype`, `missing`, `value`, `null_values`)."""

    # -- normalisation, in this order ------------------------------------------------------
    fix_control_chars: bool = True
    """1. Line endings → \\n; C0/C1 control characters, zero-width characters and the BOM removed."""
    fix_mojibake: bool = True
    """2. Repair UTF-8 decoded as cp1252/latin-1 ("cafÃ©" → "café", "â€™" → "’")."""
    strip_markup: bool = True
    """3. Remove leftover HTML tags of real elements and HTML comments."""
    unescape_entities: bool = True
    """4. Decode HTML entities (&amp; &#8217; &nbsp; ...)."""
    nfkc: bool = True
    """5. Unicode NFKC normalisation (ligatures, full-width forms, no-break spaces)."""
    remove_characters: str = "\ufffd"
    """6. Characters to delete (default: the U+FFFD replacement character of failed decodes)."""
    lowercase: bool = False
    """7. Lower-case the text."""
    collapse_whitespace: bool = True
    """8. Runs of spaces/tabs → one space, trailing spaces removed."""
    keep_indentation: bool = True
    """Keep each line's leading whitespace when collapsing (code blocks stay readable)."""
    max_blank_lines: int = Field(1, ge=-1)
    """9. At most this many empty lines in a row (-1: leave them)."""
    join_lines: bool = False
    """9'. Turn every line break into a space instead (one paragraph per document)."""
    c4_line_filter: bool = False
    """10. C4's line filter: keep only lines ending in terminal punctuation with >= 3 words and
    no javascript / cookie-policy boilerplate (off: it strips code and signatures from docs)."""

    # -- instruction and chat records ------------------------------------------------------
    record_rules: Literal["joined", "per_turn"] = "joined"
    """Instruction/chat records: every turn is normalised and PII-masked on its own and `text`
    is rendered again from the turns; the quality rules then judge the joined rendering
    ("joined") or each turn ("per_turn": the first failing turn's rule drops the record)."""

    # -- PII -------------------------------------------------------------------------------
    mask_email: bool = True
    """Mask e-mail addresses as <EMAIL>."""
    mask_iban: bool = True
    """Mask IBANs that pass the ISO 13616 mod-97 check as <IBAN>."""
    mask_credit_card: bool = True
    """Mask card numbers (Visa, Mastercard, Amex, Discover, JCB, Diners) that pass Luhn as <CREDIT_CARD>."""
    mask_ip: bool = True
    """Mask IPv4 and IPv6 addresses as <IP_ADDRESS>."""
    mask_phone: bool = True
    """Mask phone numbers (+CC international, (NNN) NNN-NNNN, NNN-NNN-NNNN, 0NN NNNN NNNN) as <PHONE>."""

    # -- quality rules: None switches a rule off; checked in this order ----------------------
    min_words: int | None = Field(50, ge=0)
    """Gopher: fewest words (tokens holding a letter or digit)."""
    max_words: int | None = Field(100_000, ge=0)
    """Gopher: most words."""
    min_mean_word_length: float | None = Field(3.0, ge=0)
    """Gopher: smallest mean word length (letters and digits per word)."""
    max_mean_word_length: float | None = Field(10.0, ge=0)
    """Gopher: largest mean word length."""
    max_symbol_ratio: float | None = Field(0.1, ge=0)
    """Gopher: most '#' per token, and most '...'/'…' per token (checked separately)."""
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1)
    """Gopher: largest share of lines starting with a bullet (• ‣ ◦ ▪ ● * -)."""
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1)
    """Gopher: largest share of lines ending in '...' or '…'."""
    min_alpha_words_ratio: float | None = Field(0.8, ge=0, le=1)
    """Gopher: smallest share of tokens holding a letter."""
    min_stop_words: int | None = Field(2, ge=0)
    """Gopher: fewest distinct stop words among the, be, to, of, and, that, have, with."""
    max_dup_paragraph_ratio: float | None = Field(None, ge=0, le=1)
    """Gopher (published 0.3): largest share of paragraphs that repeat an earlier one. Off by
    default: generated API documentation repeats member paragraphs (a third of pydoc pages fail)."""
    max_dup_paragraph_char_ratio: float | None = Field(None, ge=0, le=1)
    """Gopher (published 0.2): largest share of characters in repeated paragraphs. Off by default
    (documentation, as above)."""
    max_dup_line_ratio: float | None = Field(None, ge=0, le=1)
    """Gopher (published 0.3): largest share of non-blank lines that repeat an earlier one. Off
    by default (documentation, as above)."""
    max_dup_line_char_ratio: float | None = Field(None, ge=0, le=1)
    """Gopher (published 0.2): largest share of characters in repeated lines. Off by default
    (documentation, as above)."""
    max_top_2gram_char_ratio: float | None = Field(0.2, ge=0, le=1)
    """Gopher: largest share of characters covered by the most frequent word 2-gram."""
    max_top_3gram_char_ratio: float | None = Field(0.18, ge=0, le=1)
    """Gopher: the same for 3-grams."""
    max_top_4gram_char_ratio: float | None = Field(0.16, ge=0, le=1)
    """Gopher: the same for 4-grams."""
    max_dup_5gram_char_ratio: float | None = Field(None, ge=0, le=1)
    """Gopher (published 0.15): largest share of token characters covered by repeated word
    5-grams (a token is covered when it lies inside an occurrence of a 5-gram that is not the
    5-gram's first occurrence; whitespace not counted). Off by default, like the other Gopher
    repetition rules: generated documentation repeats member signatures (two thirds of the
    demo's pydoc pages fail at 0.15)."""
    max_dup_6gram_char_ratio: float | None = Field(None, ge=0, le=1)
    """Gopher (published 0.14): the same for 6-grams. Off by default (as above)."""
    max_dup_7gram_char_ratio: float | None = Field(None, ge=0, le=1)
    """Gopher (published 0.13): the same for 7-grams. Off by default (as above)."""
    max_dup_8gram_char_ratio: float | None = Field(None, ge=0, le=1)
    """Gopher (published 0.12): the same for 8-grams. Off by default (as above)."""
    max_dup_9gram_char_ratio: float | None = Field(None, ge=0, le=1)
    """Gopher (published 0.11): the same for 9-grams. Off by default (as above)."""
    max_dup_10gram_char_ratio: float | None = Field(None, ge=0, le=1)
    """Gopher (published 0.10): the same for 10-grams. Off by default (as above)."""
    drop_lorem_ipsum: bool = True
    """C4: drop a document containing "lorem ipsum"."""
    drop_curly_bracket: bool = False
    """C4: drop a document containing '{' (off: code and documentation pages have them)."""
    min_sentences: int | None = Field(5, ge=0)
    """C4: fewest sentences (runs of . ! ? … followed by a space or the end)."""
    min_punct_lines_ratio: float | None = Field(0.12, ge=0, le=1)
    """FineWeb: smallest share of non-blank lines ending in terminal punctuation."""
    max_short_lines_ratio: float | None = Field(None, ge=0, le=1)
    """FineWeb (published 0.67): largest share of non-blank lines of <= 30 characters. Off by
    default: documentation pages are mostly short lines (signatures, members)."""
    max_dup_line_chars_fineweb: float | None = Field(None, ge=0, le=1)
    """FineWeb (published 0.01): largest share of characters (newlines excluded) in repeated
    lines. Off by default: generated documentation repeats member headings."""
    max_newline_ratio: float | None = Field(None, ge=0)
    """FineWeb (published 0.3): most line breaks per token. Off by default (documentation)."""

    # -- language ---------------------------------------------------------------------------
    detect_language: bool = False
    """Add a `language` column (ISO 639-1, py3langid's offline model on the first 1,000
    characters; about 3 ms per document)."""
    languages: list[str] = []
    """Keep only documents in these languages (e.g. en de); others are dropped with reason
    `language` (checked after PII masking, before the quality rules). Implies detect_language."""

    # -- output ----------------------------------------------------------------------------
    quality_columns: bool = False
    """Keep the per-row measurements (`quality_words`, `quality_lines`, ...) as columns."""
    pii_columns: bool = False
    """Keep per-row PII counts (`pii_email`, ...) as columns."""

    # -- resources -------------------------------------------------------------------------
    batch_bytes: int = Field(4_000_000, ge=10_000)
    """Bytes of text normalised, masked and measured at once within a shard: bounds a worker's
    memory on shards of long documents; the result does not depend on it."""
    _fills: dict = PrivateAttr(default_factory=dict)

    @field_validator("remove_characters")
    @classmethod
    def _no_newline(cls, value: str) -> str:
        if "\n" in value:
            raise ValueError("cannot remove the newline (use join_lines)")
        return value

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Options:
        for low, high in (("min_words", "max_words"), ("min_mean_word_length", "max_mean_word_length")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is greater than {high} ({hi}): every document would be dropped")
        return self

    def pii_kinds(self) -> list[str]:
        on = {"email": self.mask_email, "iban": self.mask_iban, "credit_card": self.mask_credit_card,
              "ipv6": self.mask_ip, "ipv4": self.mask_ip, "phone": self.mask_phone}
        return [k for k in KINDS if on[k]]


QUALITY_STATS = [e.meta.output_name() for e in quality_stats(pl.col("text"))] + NGRAM_STATS


def clean_frame(frame: pl.LazyFrame, options: Options) -> pl.LazyFrame:
    """The lazy plan of one shard: every column of the input, `text` cleaned, `reason` (null
    for kept rows), PII count columns `pii_<kind>` and quality columns `quality_<stat>`."""
    return clean_text(apply_policies(frame, options.columns, options._fills), options)


def clean_text(frame: pl.LazyFrame, options: Options) -> pl.LazyFrame:
    """The row-local part of the plan (normalise, C4 lines, PII, quality, reason), applied to
    a frame the missing-value policies already ran on (its `_reject` column)."""
    text = options.text_column
    frame = frame.with_columns(normalize_text(pl.col(text), options).alias(text))
    if options.c4_line_filter:
        frame = frame.with_columns(c4_line_filter(pl.col(text)).alias(text))
    frame = mask_pii(frame, text, options.pii_kinds())
    # measure only what the enabled rules read (everything with quality_columns)
    wanted = set(QUALITY_STATS) if options.quality_columns else needed_stats(options)
    frame = frame.with_columns([s for s in quality_stats(pl.col(text)) if s.meta.output_name() in wanted])
    frame = add_ngram_stats(frame, pl.col(text), wanted)
    empty = pl.when(pl.col(text).is_null() | (pl.col(text) == "")).then(pl.lit("empty"))
    language = pl.lit(None, pl.String)
    if options.detect_language or options.languages:
        frame = frame.with_columns(detect_language(pl.col(text)).alias("language"))
        if options.languages:
            language = pl.when(~pl.col("language").is_in(options.languages).fill_null(False)).then(pl.lit("language"))
    reason = pl.coalesce(pl.col("_reject"), empty, language, first_failing_rule(options))
    return frame.with_columns(reason.alias(REASON)).drop("_reject")


def clean_shard(frame: pl.LazyFrame, options: Options) -> ShardOutput:
    """Per-shard transform: kept rows → "main", dropped rows → "rejected" with `reason` (and
    the input values of the columns a policy coerces, so a value that did not parse is kept)."""
    pii = [f"pii_{k}" for k in options.pii_kinds()]
    # policies see the whole shard (interpolation and per-shard fills are order-dependent);
    # the text work, which expands a text into lines, tokens and n-grams, runs in batches of
    # at most batch_bytes of text, so one shard of long documents cannot exhaust a worker
    base = apply_policies(frame, options.columns, options._fills).collect()
    lengths = base[options.text_column].str.len_bytes().fill_null(0).to_numpy()
    starts = batch_starts(lengths, max(base.height, 1), options.batch_bytes).tolist()
    stops = [*starts[1:], base.height]
    if "kind" in base.columns and options.text_column == "text":  # instruction/chat records
        per_turn = options.record_rules == "per_turn"
        result = pl.concat([clean_record_batch(base.slice(a, b - a), lambda f: clean_text(f, options), pii, per_turn)
                            for a, b in zip(starts, stops, strict=True)], how="vertical")
    else:
        result = pl.concat([clean_text(base.slice(a, b - a).lazy(), options).collect(engine="streaming")
                            for a, b in zip(starts, stops, strict=True)], how="vertical")
    counts = {f"pii:{k.removeprefix('pii_')}": int(result[k].sum()) for k in pii}
    drop = ([] if options.pii_columns else pii) + ([] if options.quality_columns else [c for c in QUALITY_STATS if c in result.columns])
    raw = [c for c in result.columns if c.startswith(RAW)]  # rejected rows keep input values
    kept = result.filter(pl.col(REASON).is_null()).drop([REASON, *drop, *raw])
    rejected = result.filter(pl.col(REASON).is_not_null()).drop(drop)
    rejected = rejected.with_columns([pl.col(c).alias(c.removeprefix(RAW)) for c in raw]).drop(raw)
    return ShardOutput(frames={"main": kept, "rejected": rejected}, counts=counts)


class Clean(Stage):
    """See the module docstring."""

    name = "clean"
    Options = Options
    kinds = RECORD_KINDS
    secondary = ("rejected",)
    transform = staticmethod(clean_shard)

    def check(self, schema: dict, dataset: Path) -> None:
        require_columns(self.name, dataset, schema, [self.options.text_column],
                        hint="set --text-column (job file: clean.text_column)")

    def fit(self, run: StageRun) -> Options:
        """Per-column fills that need the whole input (mean, median, mode), else the options."""
        if not any(p.missing in ("mean", "median", "mode") for p in self.options.columns):
            return self.options
        scan = pl.scan_parquet([str(s) for s in run.shards], hive_partitioning=False,
                               missing_columns="insert", extra_columns="ignore")
        options = self.options.model_copy()
        options._fills = global_fills(scan, options.columns)
        return options


def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    """Clean every input shard (see the module docstring); returns counts per drop reason."""
    return Clean(options).run(inputs, output, engine, fresh=fresh)
