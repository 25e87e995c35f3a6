"""Text normalisation: each cleaner on its own, then the whole chain in its documented order."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.clean import Options
from pipeline.clean.normalize import (
    collapse_whitespace,
    fix_line_endings,
    fix_mojibake,
    limit_blank_lines,
    nfkc,
    normalize_text,
    remove_characters,
    remove_control_chars,
    strip_markup,
    unescape_entities,
)


def apply(expr_fn, text: str, *args) -> str:
    return pl.DataFrame({"t": [text]}).select(expr_fn(pl.col("t"), *args))["t"][0]


@pytest.mark.parametrize(("fn", "text", "expected"), [
    (fix_line_endings, "a\r\nb\rc\u2028d", "a\nb\nc\nd"),
    (remove_control_chars, "a\x00b\u200bc\ufeffd\x7fe\tf", "abcde\tf"),
    (fix_mojibake, "cafÃ© â€œquotedâ€\x9d itâ€™s", "café “quoted” it’s"),
    (strip_markup, "a <b>bold</b><!-- note -->x<br/>y<div class='c'>z</div>", "a  bold  x y z "),
    (strip_markup, "if a < b and c > d: List<str>", "if a < b and c > d: List<str>"),
    (unescape_entities, "Fish &amp; chips &lt;3 &#8217; &#x2014; &eacute;", "Fish & chips <3 ’ — é"),
    (nfkc, "ﬁne ＡＢＣ ½", "fine ABC 1⁄2"),
    (collapse_whitespace, "a  b\t c   \n    indented  code  ", "a b c\n    indented code"),
    (limit_blank_lines, "a\n\n\n\n\nb\n\nc", "a\n\nb\n\nc"),
])
def test_cleaners(fn, text, expected):
    assert apply(fn, text) == expected


def test_remove_characters_set():
    assert apply(remove_characters, "a�b§c", "�§") == "abc"


def test_chain_on_real_article(articles):
    """Real article bodies come out NFKC, without control characters, markup or double spaces."""
    frame = articles.select(normalize_text(pl.col("text"), Options()).alias("text"))
    text = "\n".join(frame["text"].to_list())
    assert "  " not in text.replace("\n ", "\n")  # only leading indentation may keep runs
    assert "\r" not in text and "\x00" not in text
    before = articles["text"].str.len_chars().sum()
    after = frame["text"].str.len_chars().sum()
    assert 0.95 * before < after < 1.01 * before  # little changes in clean article text (NFKC expands "…")


def test_order_matters_mojibake_before_nfkc():
    # NFKC would turn the ™ inside "â€™" into "TM" and make the mojibake unrepairable
    out = pl.DataFrame({"t": ["itâ€™s &amp; <p>done</p>   now"]}).select(normalize_text(pl.col("t"), Options()))
    assert out["t"][0] == "it’s & done now"


def test_switches_and_lowercase():
    options = Options(fix_mojibake=False, strip_markup=False, lowercase=True, join_lines=True)
    out = pl.DataFrame({"t": ["Ã© <B>Bold</B>\nNext  Line"]}).select(normalize_text(pl.col("t"), options))
    assert out["t"][0] == "ã© <b>bold</b> next line"
