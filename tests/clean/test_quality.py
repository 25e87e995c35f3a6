"""Quality rules: each rule alone on real text agrees row for row with the per-document Python
reference (pipeline/clean/reference.py), drops some rows and keeps others; then hand cases."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.clean import Options, clean_frame
from pipeline.clean.normalize import normalize_text
from pipeline.clean.quality import RULES
from pipeline.clean.reference import failing_rules, first_failing_rule

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
    (PROSE * 3, {"max_words": 40}, "gopher_max_words"),
    ("", {}, "empty"),
])
def test_hand_cases(text, options, reason):
    options = Options(**options)
    assert reasons(pl.DataFrame({"text": [text]}), options) == [reason]
    assert first_failing_rule(text.strip(), options) == reason
