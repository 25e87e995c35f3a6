"""Quality rules in the style of Gopher, C4 and FineWeb, as Polars expressions.

`quality_stats` adds one column per measurement (prefix `quality_`), each a whole-column
expression; `RULES` lists the rules in the fixed order in which they are checked, each a small
function `(options) -> pl.Expr | None` that is true where a row FAILS (None = rule switched off).
The first failing rule is the row's drop reason. Definitions (shared with the pure-Python
reference in benchmarks/clean_reference.py; tests and benchmarks/bench_clean.py check that both
keep and drop the same rows):

- words: whitespace-separated tokens; a *word* token holds a letter or digit (Gopher's
  "non-symbol words"); word length counts its letters, digits and marks.
- lines: the text split on "\\n"; blank lines are those empty after stripping.
- paragraphs: the stripped text split on two or more "\\n".
- top n-gram (n = 2, 3, 4): characters of the most frequent word n-gram (tokens joined by one
  space) times its count, the first one seen winning a tie; over all characters of the text.
- duplicated n-gram (n = 5..10): a token is *covered* when it lies inside some occurrence of a
  word n-gram that is not that n-gram's first occurrence in the text; the characters of the
  covered tokens over the characters of all tokens (whitespace excluded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import polars as pl

from pipeline.clean.ngrams import ngram_stats, stat_names

P = "quality_"
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")  # Gopher (Rae et al. 2021)
BULLETS = "•‣◦▪●*-"
TERMINAL = ".!?\"'…。！？"  # C4's end punctuation plus the ellipsis and CJK stops
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
LOREM = r"(?i)lorem ipsum"


def q(name: str) -> pl.Expr:
    return pl.col(P + name)


NGRAMS = "_quality_ngrams"  # temporary struct column of the n-gram measurements
TOP_SIZES = (2, 3, 4)  # Gopher's most-frequent n-gram rules
DUP_SIZES = (5, 6, 7, 8, 9, 10)  # Gopher's duplicated n-gram rules
NGRAM_STATS = [P + name for name in stat_names(TOP_SIZES, DUP_SIZES)]


def ngram_column(text: pl.Expr, top: tuple[int, ...], dup: tuple[int, ...]) -> pl.Expr:
    """A struct of the word n-gram measurements (`pipeline.clean.ngrams`): characters of all
    tokens, of the most frequent n-gram (n in `top`) and of the tokens covered by repeated
    n-grams (n in `dup`). Computed over whole batches of rows in long format."""
    names = stat_names(top, dup)
    dtype = pl.Struct({name: pl.Int64 for name in names})
    return text.map_batches(partial(ngram_stats, top=top, dup=dup), return_dtype=dtype, is_elementwise=True).alias(NGRAMS)


def add_ngram_stats(frame: pl.LazyFrame, text: pl.Expr, wanted: set[str]) -> pl.LazyFrame:
    """Add the `quality_*` n-gram columns among `wanted` (nothing if none is wanted)."""
    top = tuple(n for n in TOP_SIZES if P + f"top_{n}gram_chars" in wanted)
    dup = tuple(n for n in DUP_SIZES if P + f"dup_{n}gram_chars" in wanted)
    if not (top or dup or P + "token_chars" in wanted):
        return frame
    fields = [pl.col(NGRAMS).struct.field(name).alias(P + name) for name in stat_names(top, dup)]
    return frame.with_columns(ngram_column(text, top, dup)).with_columns(fields).drop(NGRAMS)


def quality_stats(text: pl.Expr) -> list[pl.Expr]:
    """Per-row measurements the rules read (integers; ratios are left to the rules), except
    the word n-gram ones (`add_ngram_stats`)."""
    lines = text.str.split("\n")
    filled = pl.element().str.strip_chars() != ""
    filled_lines = lines.list.eval(pl.element().filter(filled))
    paragraphs = text.str.strip_chars().str.split(r"\n{2,}", literal=False)
    stats = [
        text.str.len_chars().alias(P + "chars"),
        text.str.count_matches(r"\S+").alias(P + "tokens"),
        text.str.count_matches(r"\S*[\p{L}\p{N}]\S*").alias(P + "words"),
        text.str.count_matches(r"\S*\p{L}\S*").alias(P + "alpha_words"),
        (text.str.len_chars() - text.str.count_matches(r"[^\p{L}\p{N}\p{M}]")).alias(P + "word_chars"),
        text.str.count_matches("#", literal=True).alias(P + "hashes"),
        text.str.count_matches(r"\.\.\.|…").alias(P + "ellipses"),
        pl.sum_horizontal([text.str.contains(rf"\b{w}\b").cast(pl.Int32) for w in STOP_WORDS]).alias(P + "stop_words"),
        lines.list.len().alias(P + "lines"),
        text.str.count_matches("\n", literal=True).alias(P + "newlines"),
        lines.list.eval(pl.element().str.strip_chars_start().str.contains("^[" + BULLETS.replace("-", "\\-").replace("*", "\\*") + "]")).list.sum().alias(P + "bullet_lines"),
        lines.list.eval(pl.element().str.strip_chars_end().str.contains(r"(?:\.\.\.|…)$")).list.sum().alias(P + "ellipsis_lines"),
        filled_lines.list.len().alias(P + "filled_lines"),
        filled_lines.list.eval(pl.element().str.contains("[" + TERMINAL + "]$")).list.sum().alias(P + "punct_lines"),
        filled_lines.list.eval(pl.element().str.len_chars() <= 30).list.sum().alias(P + "short_lines"),
        filled_lines.list.n_unique().alias(P + "unique_lines"),
        (filled_lines.list.eval(pl.element().str.len_chars()).list.sum()
         - filled_lines.list.unique().list.eval(pl.element().str.len_chars()).list.sum()).alias(P + "dup_line_chars"),
        paragraphs.list.len().alias(P + "paragraphs"),
        paragraphs.list.n_unique().alias(P + "unique_paragraphs"),
        (paragraphs.list.eval(pl.element().str.len_chars()).list.sum()
         - paragraphs.list.unique().list.eval(pl.element().str.len_chars()).list.sum()).alias(P + "dup_paragraph_chars"),
        text.str.count_matches(r"[.!?…。！？]+(?:[\"'”’)\]]*)(?:\s|$)").alias(P + "sentences"),
    ]
    return stats


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return num / pl.when(den > 0).then(den).otherwise(None)


# -- the rules: true where a row fails ------------------------------------------------------
def too_few_words(o) -> pl.Expr | None:
    return None if o.min_words is None else q("words") < o.min_words


def too_many_words(o) -> pl.Expr | None:
    return None if o.max_words is None else q("words") > o.max_words


def short_mean_word(o) -> pl.Expr | None:
    return None if o.min_mean_word_length is None else _ratio(q("word_chars"), q("words")) < o.min_mean_word_length


def long_mean_word(o) -> pl.Expr | None:
    return None if o.max_mean_word_length is None else _ratio(q("word_chars"), q("words")) > o.max_mean_word_length


def too_many_hashes(o) -> pl.Expr | None:
    return None if o.max_symbol_ratio is None else _ratio(q("hashes"), q("tokens")) > o.max_symbol_ratio


def too_many_ellipses(o) -> pl.Expr | None:
    return None if o.max_symbol_ratio is None else _ratio(q("ellipses"), q("tokens")) > o.max_symbol_ratio


def bullet_lines(o) -> pl.Expr | None:
    return None if o.max_bullet_lines_ratio is None else _ratio(q("bullet_lines"), q("lines")) > o.max_bullet_lines_ratio


def ellipsis_lines(o) -> pl.Expr | None:
    return None if o.max_ellipsis_lines_ratio is None else _ratio(q("ellipsis_lines"), q("lines")) > o.max_ellipsis_lines_ratio


def non_alpha_words(o) -> pl.Expr | None:
    return None if o.min_alpha_words_ratio is None else _ratio(q("alpha_words"), q("tokens")) < o.min_alpha_words_ratio


def no_stop_words(o) -> pl.Expr | None:
    return None if o.min_stop_words is None else q("stop_words") < o.min_stop_words


def duplicate_paragraphs(o) -> pl.Expr | None:
    return None if o.max_dup_paragraph_ratio is None else _ratio(q("paragraphs") - q("unique_paragraphs"), q("paragraphs")) > o.max_dup_paragraph_ratio


def duplicate_paragraph_chars(o) -> pl.Expr | None:
    return None if o.max_dup_paragraph_char_ratio is None else _ratio(q("dup_paragraph_chars"), q("chars")) > o.max_dup_paragraph_char_ratio


def duplicate_lines(o) -> pl.Expr | None:
    return None if o.max_dup_line_ratio is None else _ratio(q("filled_lines") - q("unique_lines"), q("filled_lines")) > o.max_dup_line_ratio


def duplicate_line_chars(o) -> pl.Expr | None:
    return None if o.max_dup_line_char_ratio is None else _ratio(q("dup_line_chars"), q("chars")) > o.max_dup_line_char_ratio


def top_ngram(n: int) -> Callable:
    def rule(o) -> pl.Expr | None:
        limit = getattr(o, f"max_top_{n}gram_char_ratio")
        return None if limit is None else _ratio(q(f"top_{n}gram_chars"), q("chars")) > limit

    rule.__name__ = f"top_{n}gram"
    return rule


def dup_ngram(n: int) -> Callable:
    def rule(o) -> pl.Expr | None:
        limit = getattr(o, f"max_dup_{n}gram_char_ratio")
        return None if limit is None else _ratio(q(f"dup_{n}gram_chars"), q("token_chars")) > limit

    rule.__name__ = f"dup_{n}gram"
    return rule


def lorem_ipsum(o) -> pl.Expr | None:
    return pl.col(o.text_column).str.contains(LOREM) if o.drop_lorem_ipsum else None


def curly_bracket(o) -> pl.Expr | None:
    return pl.col(o.text_column).str.contains("{", literal=True) if o.drop_curly_bracket else None


def too_few_sentences(o) -> pl.Expr | None:
    return None if o.min_sentences is None else q("sentences") < o.min_sentences


def few_punctuated_lines(o) -> pl.Expr | None:
    return None if o.min_punct_lines_ratio is None else _ratio(q("punct_lines"), q("filled_lines")) < o.min_punct_lines_ratio


def short_lines(o) -> pl.Expr | None:
    return None if o.max_short_lines_ratio is None else _ratio(q("short_lines"), q("filled_lines")) > o.max_short_lines_ratio


def line_char_duplicates(o) -> pl.Expr | None:
    limit = o.max_dup_line_chars_fineweb
    return None if limit is None else _ratio(q("dup_line_chars"), q("chars") - q("newlines")) > limit


def too_many_newlines(o) -> pl.Expr | None:
    return None if o.max_newline_ratio is None else _ratio(q("newlines"), q("tokens")) > o.max_newline_ratio


@dataclass(frozen=True)
class Rule:
    name: str  # the `reason` of a row it drops
    source: str
    fails: Callable


RULES: list[Rule] = [
    Rule("gopher_min_words", "Gopher", too_few_words),
    Rule("gopher_max_words", "Gopher", too_many_words),
    Rule("gopher_min_mean_word_length", "Gopher", short_mean_word),
    Rule("gopher_max_mean_word_length", "Gopher", long_mean_word),
    Rule("gopher_hash_ratio", "Gopher", too_many_hashes),
    Rule("gopher_ellipsis_ratio", "Gopher", too_many_ellipses),
    Rule("gopher_bullet_lines", "Gopher", bullet_lines),
    Rule("gopher_ellipsis_lines", "Gopher", ellipsis_lines),
    Rule("gopher_alpha_words", "Gopher", non_alpha_words),
    Rule("gopher_stop_words", "Gopher", no_stop_words),
    Rule("gopher_dup_paragraphs", "Gopher", duplicate_paragraphs),
    Rule("gopher_dup_paragraph_chars", "Gopher", duplicate_paragraph_chars),
    Rule("gopher_dup_lines", "Gopher", duplicate_lines),
    Rule("gopher_dup_line_chars", "Gopher", duplicate_line_chars),
    Rule("gopher_top_2gram", "Gopher", top_ngram(2)),
    Rule("gopher_top_3gram", "Gopher", top_ngram(3)),
    Rule("gopher_top_4gram", "Gopher", top_ngram(4)),
    *(Rule(f"gopher_dup_{n}gram", "Gopher", dup_ngram(n)) for n in DUP_SIZES),
    Rule("c4_lorem_ipsum", "C4", lorem_ipsum),
    Rule("c4_curly_bracket", "C4", curly_bracket),
    Rule("c4_min_sentences", "C4", too_few_sentences),
    Rule("fineweb_punct_lines", "FineWeb", few_punctuated_lines),
    Rule("fineweb_short_lines", "FineWeb", short_lines),
    Rule("fineweb_dup_line_chars", "FineWeb", line_char_duplicates),
    Rule("fineweb_newline_ratio", "FineWeb", too_many_newlines),
]


def enabled_checks(options) -> list[tuple[str, pl.Expr]]:
    """(rule name, fails expression) of every rule switched on, in order."""
    checks = [(r.name, r.fails(options)) for r in RULES]
    return [(name, e) for name, e in checks if e is not None]


def needed_stats(options) -> set[str]:
    """The `quality_*` columns the enabled rules read."""
    return {c for _, e in enabled_checks(options) for c in e.meta.root_names() if c.startswith(P)}


def first_failing_rule(options) -> pl.Expr:
    """The name of the first rule (in RULES order) a row fails, else null."""
    checks = [pl.when(e.fill_null(False)).then(pl.lit(name)) for name, e in enabled_checks(options)]
    return pl.coalesce(checks) if checks else pl.lit(None, pl.String)


def _at_least_words(e: pl.Expr, k: int) -> pl.Expr:
    """`e` holds at least k whitespace-separated tokens (one regex search that stops at the
    k-th token, instead of counting every token)."""
    if k <= 0:
        return pl.lit(True)
    return e.str.contains(r"\S" + r"\s+\S+" * (k - 2) + r"\s+\S" if k >= 2 else r"\S")


def c4_line_filter(text: pl.Expr, max_word_length: int = 1000, min_words_per_line: int = 3) -> pl.Expr:
    """C4's line filter: drop lines without terminal punctuation (or ending in "..."), with
    fewer than `min_words_per_line` words, with a word longer than `max_word_length`,
    mentioning javascript, or cookie/terms-of-use boilerplate (ASCII case-insensitive); strip
    [1]-style citations."""
    e = pl.element().str.strip_chars()
    cited = e.str.replace_all(r"\[\d*\]|\[edit\]|\[citation needed\]", "")
    keep = (
        ~e.str.contains(r"\S{" + str(max_word_length + 1) + ",}")
        & cited.str.slice(-1).is_in(list(".?!\"'")) & ~cited.str.ends_with("...")
        & _at_least_words(e, min_words_per_line)
        & ~e.str.contains_any(["javascript", *POLICY_PHRASES], ascii_case_insensitive=True)
    )
    return text.str.split("\n").list.eval(cited.filter(keep)).list.join("\n")
