"""Quality rules: each rule alone on real text agrees row for row with the per-document Python
reference (benchmarks/clean_reference.py), drops some rows and keeps others; then hand cases."""

from __future__ import annotations

import polars as pl
import pytest
from clean_reference import (
    _dup_ngram_chars,
    _top_ngram_chars,
    failing_rules,
    first_failing_rule,
)
from clean_reference import c4_line_filter as reference_c4

from pipeline.clean import Options, clean_frame, ngrams
from pipeline.clean.ngrams import ngram_stats
from pipeline.clean.normalize import normalize_text
from pipeline.clean.quality import RULES, c4_line_filter

NO_PII = {"mask_email": False, "mask_iban": False, "mask_credit_card": False, "mask_ip": False, "mask_phone": False}
OFF = {
    "min_words": None, "max_words": None, "min_mean_word_length": None, "max_mean_word_length": None,
    "max_symbol_ratio": None, "max_bullet_lines_ratio": None, "max_ellipsis_lines_ratio": None,
    "min_alpha_words_ratio": None, "min_stop_words": None, "max_top_2gram_char_ratio": None,
    "max_top_3gram_char_ratio": None, "max_top_4gram_char_ratio": None, "drop_lorem_ipsum": False,
    "min_sentences": None, "min_punct_lines_ratio": None,
    "mask_email": False, "mask_iban": False, "mask_credit_card": False, "mask_ip": False, "mask_phone": False,
}

# one rule switched on at a threshold that splits a real corpus (published values where they bite)
SINGLE = {
    "gopher_min_words": {"min_words": 50},
    "gopher_max_words": {"max_words": 2000},
    "gopher_min_mean_word_length": {"min_mean_word_length": 4.3},
    "gopher_max_mean_word_length": {"max_mean_word_length": 5.0},
    "gopher_hash_ratio": {"max_symbol_ratio": 0.002},
    "gopher_bullet_lines": {"max_bullet_lines_ratio": 0.2},
    "gopher_ellipsis_lines": {"max_ellipsis_lines_ratio": 0.02},
    "gopher_alpha_words": {"min_alpha_words_ratio": 0.8},
    "gopher_stop_words": {"min_stop_words": 6},
    "gopher_dup_paragraphs": {"max_dup_paragraph_ratio": 0.05},
    "gopher_dup_paragraph_chars": {"max_dup_paragraph_char_ratio": 0.02},
    "gopher_dup_lines": {"max_dup_line_ratio": 0.3},
    "gopher_dup_line_chars": {"max_dup_line_char_ratio": 0.2},
    "gopher_top_2gram": {"max_top_2gram_char_ratio": 0.02},
    "gopher_top_3gram": {"max_top_3gram_char_ratio": 0.015},
    "gopher_top_4gram": {"max_top_4gram_char_ratio": 0.012},
    "gopher_dup_5gram": {"max_dup_5gram_char_ratio": 0.15},
    "gopher_dup_6gram": {"max_dup_6gram_char_ratio": 0.14},
    "gopher_dup_7gram": {"max_dup_7gram_char_ratio": 0.13},
    "gopher_dup_8gram": {"max_dup_8gram_char_ratio": 0.12},
    "gopher_dup_9gram": {"max_dup_9gram_char_ratio": 0.11},
    "gopher_dup_10gram": {"max_dup_10gram_char_ratio": 0.10},
    "c4_curly_bracket": {"drop_curly_bracket": True},
    "c4_min_sentences": {"min_sentences": 5},
    "fineweb_punct_lines": {"min_punct_lines_ratio": 0.5},
    "fineweb_short_lines": {"max_short_lines_ratio": 0.67},
    "fineweb_dup_line_chars": {"max_dup_line_chars_fineweb": 0.01},
    "fineweb_newline_ratio": {"max_newline_ratio": 0.3},
}


@pytest.fixture(scope="module")
def corpus(web_docs, sms) -> pl.DataFrame:
    """300 real web page texts of every type plus 100 SMS, normalised as the stage does."""
    texts = pl.concat([web_docs.select("id", "text").head(300),
                       sms.head(100).select(pl.int_range(pl.len()).cast(pl.String).alias("id"), "text")])
    return texts.with_columns(normalize_text(pl.col("text"), Options()).alias("text"))


def reasons(frame: pl.DataFrame, options: Options) -> list[str | None]:
    return clean_frame(frame.lazy(), options).collect()["reason"].to_list()


@pytest.fixture(scope="module")
def strict() -> Options:
    """Every rule on at once, at the thresholds of SINGLE (PII masking off: the reference
    reads the text as it is)."""
    return Options(**NO_PII, **{k: v for single in SINGLE.values() for k, v in single.items()})


@pytest.fixture(scope="module")
def both(corpus, strict) -> tuple[pl.DataFrame, list[list[str]]]:
    fails = [r.fails(strict).fill_null(False).alias(r.name) for r in RULES if r.fails(strict) is not None]
    ours = clean_frame(corpus.lazy(), strict).with_columns(fails).collect()
    theirs = [failing_rules(t, strict) for t in corpus["text"].to_list()]
    return ours, theirs


@pytest.mark.parametrize("rule", list(SINGLE))
def test_rule_matches_reference(both, rule):
    """Each rule drops exactly the rows the per-document reference drops, and splits the corpus."""
    ours, theirs = both
    ours_fail = ours[rule].to_list()
    assert ours_fail == [rule in names for names in theirs]
    assert 0 < sum(ours_fail) < len(ours_fail) - 1


def test_first_failing_rule_is_the_reason(both, strict):
    ours, theirs = both
    assert ours["reason"].to_list() == [names[0] if names else None for names in theirs]


def test_every_rule_has_a_case():
    assert set(SINGLE) | {"gopher_ellipsis_ratio", "c4_lorem_ipsum"} == {r.name for r in RULES}


def test_defaults_match_reference(corpus):
    options = Options(**NO_PII)
    ours = clean_frame(corpus.lazy(), options).collect()
    assert ours["reason"].to_list() == [first_failing_rule(t, options) for t in corpus["text"].to_list()]
    # SMS are short: the first rule in the order (Gopher's 50 words) names every short one
    sms = ours.tail(100).filter(pl.col("quality_words") < 50)
    assert sms.height > 90 and set(sms["reason"]) == {"gopher_min_words"}


PROSE = ("The committee met on Tuesday to review the budget and to discuss the plans that have been "
         "made with the city. Members of the public were invited to speak, and several of them did. ")


@pytest.mark.parametrize(("text", "options", "reason"), [
    (PROSE * 3, {}, None),
    ("Lorem ipsum dolor sit amet. " + PROSE * 3, {}, "c4_lorem_ipsum"),
    (PROSE * 3 + "\n" + "... " * 40, {}, "gopher_ellipsis_ratio"),
    (PROSE * 3 + "\n" + "# " * 40, {}, "gopher_hash_ratio"),
    ("\n".join(["- item one here", "- item two here"] * 30) + "\n" + PROSE, {}, "gopher_bullet_lines"),
    ("1234 5678 9012 3456 " * 30 + PROSE, {}, "gopher_alpha_words"),
    ("Antidisestablishmentarianism " * 60 + ".", {"min_sentences": None}, "gopher_max_mean_word_length"),
    (PROSE * 3, {"max_words": 40, "min_words": 10}, "gopher_max_words"),
    ("", {}, "empty"),
])
def test_hand_cases(text, options, reason):
    options = Options(**options)
    assert reasons(pl.DataFrame({"text": [text]}), options) == [reason]
    assert first_failing_rule(text.strip(), options) == reason


# -- duplicated n-grams (Gopher's dup_n_grams, n = 5..10) and the long-format measurements ------
DUP_ON = {f"max_dup_{n}gram_char_ratio": limit for n, limit in zip(range(5, 11), (0.15, 0.14, 0.13, 0.12, 0.11, 0.10), strict=True)}


@pytest.fixture(scope="module")
def article(articles) -> str:
    """A real news article body without any repeated word 5-gram (so it passes every dup rule)."""
    texts = articles.with_columns(normalize_text(pl.col("text"), Options()).alias("text"))["text"].to_list()
    return next(t for t in texts if len(t.split()) > 300 and _dup_ngram_chars(t.split(), 5) == 0)


def test_dup_ngram_rules_on_real_text(article):
    """The real article passes; the same article with its first third pasted again at the end
    fails on 5-grams first, and both implementations agree on every size."""
    words = article.split()
    repeated = article + "\n\n" + " ".join(words[: len(words) // 3])
    options = Options(**NO_PII, **DUP_ON)
    assert reasons(pl.DataFrame({"text": [article, repeated]}), options) == [None, "gopher_dup_5gram"]
    assert first_failing_rule(article, options) is None
    assert failing_rules(repeated, options) == [f"gopher_dup_{n}gram" for n in range(5, 11)]
    # the pasted third is covered (a quarter of all token characters), nothing else is
    stats = ngram_stats(pl.Series([repeated]), top=(), dup=(5, 10)).struct.unnest().row(0, named=True)
    pasted = sum(len(w) for w in words[: len(words) // 3])
    assert stats["dup_5gram_chars"] == stats["dup_10gram_chars"] == pasted
    assert stats["token_chars"] == sum(len(w) for w in words) + pasted


def test_dup_ngram_definition_by_hand():
    """Covered = inside a non-first occurrence; overlapping windows count a token once."""
    stats = ngram_stats(pl.Series(["a b a b a b", "x y z x y z x", "", None, "one"]), top=(2, 3), dup=(2, 3))
    assert stats.struct.unnest().to_dicts() == [
        # grams ab ba ab ba ab: repeats start at tokens 2, 3, 4 → tokens 2..5 covered
        {"token_chars": 6, "top_2gram_chars": 9, "top_3gram_chars": 10, "dup_2gram_chars": 4, "dup_3gram_chars": 4},
        {"token_chars": 7, "top_2gram_chars": 6, "top_3gram_chars": 10, "dup_2gram_chars": 4, "dup_3gram_chars": 4},
        {"token_chars": 0, "top_2gram_chars": 0, "top_3gram_chars": 0, "dup_2gram_chars": 0, "dup_3gram_chars": 0},
        {"token_chars": 0, "top_2gram_chars": 0, "top_3gram_chars": 0, "dup_2gram_chars": 0, "dup_3gram_chars": 0},
        {"token_chars": 3, "top_2gram_chars": 0, "top_3gram_chars": 0, "dup_2gram_chars": 0, "dup_3gram_chars": 0},
    ]


def test_ngram_stats_match_reference_in_batches(corpus, monkeypatch):
    """Every size on real text (with tabs and no-break spaces mixed in) equals the per-document
    definition, also when the rows are processed in many small batches."""
    texts = corpus["text"].to_list()
    texts[::7] = [t.replace(" ", "\t", 3).replace(" ", "\xa0  ", 2) for t in texts[::7]]
    series = pl.Series(texts + ["", None, " \n "])
    expected = [{"token_chars": sum(map(len, t.split())),
                 **{f"top_{n}gram_chars": _top_ngram_chars(t.split(), n) for n in (2, 3, 4)},
                 **{f"dup_{n}gram_chars": _dup_ngram_chars(t.split(), n) for n in range(5, 11)}}
                for t in [*texts, "", "", " \n "]]
    whole = ngram_stats(series, top=(2, 3, 4), dup=tuple(range(5, 11)))
    assert whole.struct.unnest().to_dicts() == expected
    monkeypatch.setattr(ngrams, "BATCH_CHARS", 20_000)
    assert ngram_stats(series, top=(2, 3, 4), dup=tuple(range(5, 11))).equals(whole)


def test_only_enabled_ngram_sizes_are_measured(corpus):
    options = Options(**NO_PII, max_top_3gram_char_ratio=None, max_top_4gram_char_ratio=None, max_dup_7gram_char_ratio=0.13)
    columns = clean_frame(corpus.lazy(), options).collect_schema().names()
    assert {c for c in columns if "gram" in c or "token_chars" in c} == {
        "quality_top_2gram_chars", "quality_dup_7gram_chars", "quality_token_chars"}


@pytest.mark.parametrize("min_words", [1, 2, 3, 5])
def test_c4_line_filter_matches_reference(corpus, min_words):
    texts = corpus["text"].to_list() + ["We use COOKIES here.\nJavaScript must be on, sorry.\n  a b c!  \nTrailing one two ...", ""]
    ours = pl.DataFrame({"text": texts}).select(c4_line_filter(pl.col("text"), min_words_per_line=min_words))["text"].to_list()
    assert ours == [reference_c4(t, min_words_per_line=min_words) for t in texts]
    assert ours[-2] == "a b c!" if min_words <= 3 else ours[-2] == ""
