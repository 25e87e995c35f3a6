"""Text normalisation as Polars expressions: each cleaner takes a string expression and returns one.

The stage applies them in the fixed order of `normalize_text` (see docs/stages/clean.md for
why this order): line endings, mojibake, control characters, markup residue (tags, comments,
entities), Unicode NFKC, special characters, lower-casing, whitespace and lines.
"""

from __future__ import annotations

import html.entities
from functools import cache

import polars as pl

# C0 controls except tab and newline, DEL, C1 controls, zero-width characters and the BOM
CONTROL_CHARS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\u200B-\u200D\u2060\uFEFF]"

# HTML element names (WHATWG); only these count as tags, so `a < b > c` and `List<str>` survive
HTML_TAGS = (
    "a abbr address area article aside audio b base bdi bdo blockquote body br button canvas "
    "caption center cite code col colgroup data datalist dd del details dfn dialog div dl dt em "
    "embed fieldset figcaption figure font footer form h1 h2 h3 h4 h5 h6 head header hgroup hr "
    "html i iframe img input ins kbd label legend li link main map mark menu meta meter nav "
    "noscript object ol optgroup option output p param picture pre progress q rp rt ruby s samp "
    "script section select small source span strike strong style sub summary sup svg table tbody "
    "td template textarea tfoot th thead time title tr track tt u ul var video wbr"
).split()
TAG_PATTERN = r"(?i)</?(?:" + "|".join(HTML_TAGS) + r")(?:\s[^<>]{0,500})?/?>"
COMMENT_PATTERN = r"(?s)<!--.*?-->"

# characters whose UTF-8 bytes are often mis-decoded as cp1252/latin-1 ("â€™" for "’")
_MOJIBAKE_SOURCE = (
    [chr(c) for c in range(0xA0, 0x180)]
    + list("‘’‚“”„†‡•…‰‹›€™–—−″′")
)


def _sloppy_cp1252(raw: bytes) -> str:
    """cp1252 as browsers decode it: its five undefined bytes become the C1 character."""
    return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in raw)


@cache
def mojibake_table() -> dict[str, str]:
    """Mis-decoded sequence → the character it came from (UTF-8 read as cp1252 or latin-1)."""
    table = {}
    for char in _MOJIBAKE_SOURCE:
        raw = char.encode("utf-8")
        for bad in (_sloppy_cp1252(raw), raw.decode("latin-1")):
            if bad != char and len(bad) > 1:
                table.setdefault(bad, char)
    return table


@cache
def entity_table() -> dict[str, str]:
    """HTML entity → character: every named HTML5 entity with its `;`, and numeric references
    (decimal and hex) for ASCII, Latin-1 and General Punctuation."""
    table = {f"&{name}": char for name, char in html.entities.html5.items() if name.endswith(";")}
    for code in [*range(0x20, 0x7F), *range(0xA0, 0x180), *range(0x2000, 0x2070), 0x20AC, 0x2122]:
        char = chr(code)
        table[f"&#{code};"] = char
        table[f"&#x{code:x};"] = char
        table[f"&#x{code:X};"] = char
    return table


def fix_line_endings(text: pl.Expr) -> pl.Expr:
    """CRLF, CR, form feed, vertical tab and Unicode line/paragraph separators → \\n."""
    return text.str.replace_all(r"\r\n|[\r\x0B\x0C\u0085\u2028\u2029]", "\n")


def remove_control_chars(text: pl.Expr) -> pl.Expr:
    """Drop C0/C1 control characters (keeping tab and newline), zero-width characters, the BOM."""
    return text.str.replace_all(CONTROL_CHARS, "")


def fix_mojibake(text: pl.Expr) -> pl.Expr:
    """Repair UTF-8 text that was decoded as cp1252 or latin-1 ("cafÃ©" → "café", "â€™" → "’")."""
    table = mojibake_table()
    return text.str.replace_many(list(table), list(table.values()), leftmost=True)


def strip_markup(text: pl.Expr) -> pl.Expr:
    """Remove HTML comments and tags of real HTML elements left over from extraction."""
    return text.str.replace_all(COMMENT_PATTERN, " ").str.replace_all(TAG_PATTERN, " ")


def unescape_entities(text: pl.Expr) -> pl.Expr:
    """Decode HTML entities (`&amp;` → `&`, `&#8217;` → `’`, `&nbsp;` → no-break space)."""
    table = entity_table()
    return text.str.replace_many(list(table), list(table.values()), leftmost=True)


def nfkc(text: pl.Expr) -> pl.Expr:
    """Unicode NFKC: compatibility forms folded (ligatures, full-width letters, `™` → `TM`)."""
    return text.str.normalize("NFKC")


def remove_characters(text: pl.Expr, characters: str) -> pl.Expr:
    """Delete every character of `characters` (the job's configurable special-character set)."""
    if not characters:
        return text
    unique = list(dict.fromkeys(characters))
    return text.str.replace_many(unique, [""] * len(unique))


def lowercase(text: pl.Expr) -> pl.Expr:
    return text.str.to_lowercase()


def collapse_whitespace(text: pl.Expr, keep_indentation: bool = True) -> pl.Expr:
    """Runs of spaces/tabs → one space; trailing spaces at line ends removed. With
    `keep_indentation` the leading whitespace of a line (code blocks) is kept as it is."""
    text = text.str.replace_all(r"[ \t]+\n", "\n").str.replace_all(r"[ \t]+$", "")
    if keep_indentation:
        return text.str.replace_all(r"(\S)[ \t]{2,}|(\S)\t", "$1$2 ")
    return text.str.replace_all(r"[ \t]+", " ").str.replace_all(r"\n ", "\n")


def limit_blank_lines(text: pl.Expr, max_blank_lines: int = 1) -> pl.Expr:
    """At most `max_blank_lines` empty lines in a row (0 removes every empty line)."""
    return text.str.replace_all(r"\n{" + str(max_blank_lines + 2) + r",}", "\n" * (max_blank_lines + 1))


def join_lines(text: pl.Expr) -> pl.Expr:
    """Every line break → one space (one paragraph per document)."""
    return text.str.replace_all(r"\s*\n\s*", " ")


def normalize_text(text: pl.Expr, options) -> pl.Expr:
    """All enabled cleaners, in the documented order. `options` is a `pipeline.clean.Options`."""
    if options.fix_control_chars:
        text = fix_line_endings(text)
    if options.fix_mojibake:  # before control characters: "â€\x9d" (”) holds a C1 character
        text = fix_mojibake(text)
    if options.fix_control_chars:
        text = remove_control_chars(text)
    if options.strip_markup:
        text = strip_markup(text)
    if options.unescape_entities:
        text = unescape_entities(text)
    if options.nfkc:
        text = nfkc(text)
    text = remove_characters(text, options.remove_characters)
    if options.lowercase:
        text = lowercase(text)
    if options.collapse_whitespace:
        text = collapse_whitespace(text, options.keep_indentation)
    if options.join_lines:
        text = join_lines(text)
    elif options.max_blank_lines >= 0:
        text = limit_blank_lines(text, options.max_blank_lines)
    return text.str.strip_chars()
