"""The quality rules written the way most people write them: one Python function per document.

This is the executable definition the vectorised rules in `pipeline.clean.quality` are checked
against (tests and benchmarks/bench_clean.py apply it per row with pandas). It is plain
Python, slow, and the stage never calls it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import partial

from pipeline.clean.quality import BULLETS, LOREM, POLICY_PHRASES, RULES, STOP_WORDS, TERMINAL

SENTENCE = re.compile(r"[.!?…。！？]+[\"'”’)\]]*(?:\s|$)")


def c4_line_filter(text: str, max_word_length: int = 1000, min_words_per_line: int = 3) -> str:
    """C4's line filter, line by line (the definition `quality.c4_line_filter` is checked against)."""
    kept = []
    for line in text.split("\n"):
        line = line.strip()
        words = line.split()
        cited = re.sub(r"\[\d*\]|\[edit\]|\[citation needed\]", "", line)
        low = line.lower()
        if (any(len(w) > max_word_length for w in words) or not cited.endswith((".", "?", "!", '"', "'"))
                or cited.endswith("...") or len(words) < min_words_per_line
                or "javascript" in low or any(p in low for p in POLICY_PHRASES)):
            continue
        kept.append(cited)
    return "\n".join(kept)


def _is_word(token: str) -> bool:
    return any(c.isalnum() for c in token)


def _word_chars(token: str) -> int:
    return sum(1 for c in token if c.isalnum() or unicodedata.category(c).startswith("M"))


def _top_ngram_chars(tokens: list[str], n: int) -> int:
    grams = [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0
    gram, count = Counter(grams).most_common(1)[0]
    return len(gram) * count


def _dup_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters of the tokens inside an occurrence of an n-gram seen before in the text."""
    seen, covered = set(), [False] * len(tokens)
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i:i + n])
        if gram in seen:
            covered[i:i + n] = [True] * n
        seen.add(gram)
    return sum(len(t) for t, c in zip(tokens, covered, strict=True) if c)


def _dup_chars(items: list[str]) -> int:
    seen, dup = set(), 0
    for item in items:
        if item in seen:
            dup += len(item)
        seen.add(item)
    return dup


def first_failing_rule(text: str, o) -> str | None:
    """The reason the stage gives a row with this (already normalised) text, or None to keep it.
    `o` is a `pipeline.clean.Options`; rules run in the order of quality.RULES."""
    return next((name for name, check in _checks(text, o) if check()), None)


def failing_rules(text: str, o) -> list[str]:
    """Every rule this (already normalised) text fails, in the order of quality.RULES."""
    return [name for name, check in _checks(text, o) if check()]


def _checks(text: str, o) -> list:
    """(rule name, zero-argument check) pairs; a check computes only what its rule needs."""
    if not text:
        return [("empty", lambda: True)]
    tokens = text.split()
    words = [t for t in tokens if _is_word(t)]
    n_tokens, n_words = len(tokens), len(words)
    lines = text.split("\n")
    filled = [line for line in lines if line.strip()]
    paragraphs = re.split(r"\n{2,}", text.strip())
    chars = len(text)

    def ratio(a, b):
        return a / b if b else None

    def over(value, limit):
        return limit is not None and value is not None and value > limit

    def under(value, limit):
        return limit is not None and value is not None and value < limit

    def dup_ngram(n):
        limit = getattr(o, f"max_dup_{n}gram_char_ratio")
        return limit is not None and over(ratio(_dup_ngram_chars(tokens, n), sum(map(len, tokens))), limit)

    def mean_len():
        return ratio(sum(_word_chars(w) for w in words), n_words)

    checks = [
        ("gopher_min_words", lambda: under(n_words, o.min_words)),
        ("gopher_max_words", lambda: over(n_words, o.max_words)),
        ("gopher_min_mean_word_length", lambda: under(mean_len(), o.min_mean_word_length)),
        ("gopher_max_mean_word_length", lambda: over(mean_len(), o.max_mean_word_length)),
        ("gopher_hash_ratio", lambda: over(ratio(text.count("#"), n_tokens), o.max_symbol_ratio)),
        ("gopher_ellipsis_ratio", lambda: over(ratio(len(re.findall(r"\.\.\.|…", text)), n_tokens), o.max_symbol_ratio)),
        ("gopher_bullet_lines", lambda: over(ratio(sum(line.lstrip()[:1] in BULLETS and line.lstrip() != "" for line in lines), len(lines)), o.max_bullet_lines_ratio)),
        ("gopher_ellipsis_lines", lambda: over(ratio(sum(line.rstrip().endswith(("...", "…")) for line in lines), len(lines)), o.max_ellipsis_lines_ratio)),
        ("gopher_alpha_words", lambda: under(ratio(sum(any(c.isalpha() for c in t) for t in tokens), n_tokens), o.min_alpha_words_ratio)),
        ("gopher_stop_words", lambda: under(sum(bool(re.search(rf"\b{w}\b", text)) for w in STOP_WORDS), o.min_stop_words)),
        ("gopher_dup_paragraphs", lambda: over(ratio(len(paragraphs) - len(set(paragraphs)), len(paragraphs)), o.max_dup_paragraph_ratio)),
        ("gopher_dup_paragraph_chars", lambda: over(ratio(_dup_chars(paragraphs), chars), o.max_dup_paragraph_char_ratio)),
        ("gopher_dup_lines", lambda: over(ratio(len(filled) - len(set(filled)), len(filled)), o.max_dup_line_ratio)),
        ("gopher_dup_line_chars", lambda: over(ratio(_dup_chars(filled), chars), o.max_dup_line_char_ratio)),
        ("gopher_top_2gram", lambda: over(ratio(_top_ngram_chars(tokens, 2), chars), o.max_top_2gram_char_ratio)),
        ("gopher_top_3gram", lambda: over(ratio(_top_ngram_chars(tokens, 3), chars), o.max_top_3gram_char_ratio)),
        ("gopher_top_4gram", lambda: over(ratio(_top_ngram_chars(tokens, 4), chars), o.max_top_4gram_char_ratio)),
        *((f"gopher_dup_{n}gram", partial(dup_ngram, n)) for n in range(5, 11)),
        ("c4_lorem_ipsum", lambda: o.drop_lorem_ipsum and re.search(LOREM, text) is not None),
        ("c4_curly_bracket", lambda: o.drop_curly_bracket and "{" in text),
        ("c4_min_sentences", lambda: under(len(SENTENCE.findall(text)), o.min_sentences)),
        ("fineweb_punct_lines", lambda: under(ratio(sum(line.endswith(tuple(TERMINAL)) for line in filled), len(filled)), o.min_punct_lines_ratio)),
        ("fineweb_short_lines", lambda: over(ratio(sum(len(line) <= 30 for line in filled), len(filled)), o.max_short_lines_ratio)),
        ("fineweb_dup_line_chars", lambda: over(ratio(_dup_chars(filled), chars - text.count("\n")), o.max_dup_line_chars_fineweb)),
        ("fineweb_newline_ratio", lambda: over(ratio(text.count("\n"), n_tokens), o.max_newline_ratio)),
    ]
    enabled = _enabled(o)
    return [(name, check) for name, check in checks if name in enabled]


_ENABLED: dict[int, tuple[object, set[str]]] = {}


def _enabled(o) -> set[str]:
    """Names of the rules `o` switches on (cached per options object)."""
    cached = _ENABLED.get(id(o))
    if cached is None or cached[0] is not o:
        cached = (o, {r.name for r in RULES if r.fails(o) is not None})
        _ENABLED[id(o)] = cached
    return cached[1]
