"""Language identification with py3langid (langid.py's model, shipped inside the package: no
download at run time). Optional: off unless `detect_language` or `languages` is set.

The classifier is called once per document on its first `sample_chars` characters inside
`map_batches` (a model call per document, like HTML parsing in extract); everything around it
stays a column expression.
"""

from __future__ import annotations

import polars as pl


def _classify_batch(texts: pl.Series, sample_chars: int) -> pl.Series:
    try:
        import py3langid
    except ImportError as error:  # pragma: no cover - the message is the point
        raise ImportError("language identification needs py3langid: pip install 'py3langid>=0.3'") from error
    codes = [py3langid.classify(t[:sample_chars])[0] if t else None for t in texts.to_list()]
    return pl.Series(texts.name, codes, dtype=pl.String)


def detect_language(text: pl.Expr, sample_chars: int = 1000) -> pl.Expr:
    """ISO 639-1 code of the text's language (97 languages), null for empty text."""
    return text.map_batches(lambda s: _classify_batch(s, sample_chars), return_dtype=pl.String)
