"""Bytes → text for HTML pages: BOM, then valid UTF-8, then the declared charset, then a guess.

Order and why:
1. a byte-order mark is unambiguous;
2. bytes that decode as strict UTF-8 and contain non-ASCII are UTF-8 whatever the page says
   (a header saying ISO-8859-1 over UTF-8 bytes is the most common mislabelling on the web,
   and real Latin-1/CJK text with non-ASCII bytes almost never passes strict UTF-8);
   pure ASCII is decoded the same by every ASCII-compatible charset;
3. the HTTP `Content-Type` charset, then `<meta charset>` / `<meta http-equiv>` in the first
   4 KB (UTF-16/32 declarations win over step 2, since their bytes are not ASCII-compatible);
4. a guess (charset-normalizer) with a Western default: when no two non-ASCII bytes are
   adjacent, no multi-byte encoding is plausible (CJK text is mostly pairs of high bytes) and
   only single-byte Latin-script codecs are considered; when Windows-1252 decodes the bytes as
   well as the detector's best (equal chaos), it is chosen. Detectors cannot tell French in
   Windows-1252 from Czech in Windows-1250 by a few accented letters (`très` → `trčs`), and
   Western text is by far the more common; a page that really is Central European usually
   has enough evidence (adjacent high bytes, a declaration) to say so.

`detect_html` says which of these decided (`Decoded.source`: bom, utf-8, header, meta,
guessed); extract records the codec as `meta.encoding` and `meta.encoding_guessed` when it
was a guess.
"""

from __future__ import annotations

import codecs
import re
from typing import NamedTuple

_BOMS = [  # UTF-32 LE before UTF-16 LE: its BOM starts with the UTF-16 LE one
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([\w:.\-]+)", re.I)
_META_CHARSET = re.compile(rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([\w:.\-]+)", re.I)
# WHATWG: these labels mean windows-1252 in browsers
_ALIASES = {"iso8859-1": "cp1252", "latin-1": "cp1252", "ascii": "cp1252", "us-ascii": "cp1252"}


def normalise_charset(label: str | None) -> str | None:
    """A Python codec name for a charset label, or None if Python does not know it."""
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'").lower()).name
    except LookupError:
        return None
    return _ALIASES.get(name, name)


def declared_charset(body: bytes, content_type: str | None = None) -> tuple[str | None, str]:
    """(codec, where) from the Content-Type header, else from a meta tag in the first 4 KB."""
    if content_type:
        match = _HEADER_CHARSET.search(content_type)
        if match and (codec := normalise_charset(match.group(1))):
            return codec, "header"
    match = _META_CHARSET.search(body[:4096])
    if match and (codec := normalise_charset(match.group(1).decode("ascii", "replace"))):
        # a meta tag read as ASCII cannot really declare UTF-16: the bytes would not be ASCII
        return ("utf-8" if codec.startswith("utf-16") else codec), "meta"
    return None, ""


class Decoded(NamedTuple):
    text: str
    codec: str
    source: str  # what decided: "bom", "utf-8", "header", "meta" or "guessed"


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str]:
    """(text, codec used) for an HTML body; never raises on bad bytes (they become U+FFFD)."""
    decoded = detect_html(body, content_type)
    return decoded.text, decoded.codec


def detect_html(body: bytes, content_type: str | None = None) -> Decoded:
    """The body decoded, with the codec and what decided it (see the module docstring)."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return Decoded(body[len(bom):].decode(codec, "replace"), codec, "bom")
    declared, where = declared_charset(body, content_type)
    if declared and declared.startswith(("utf-16", "utf-32")):
        return Decoded(body.decode(declared, "replace"), declared, where)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        # declared UTF-8 with a few bad bytes, or a body cut inside its last character
        if declared == "utf-8" or (declared is None and error.start >= len(body) - 3):
            return Decoded(body.decode("utf-8", "replace"), "utf-8", where or "utf-8")
    else:
        if text.isascii() and declared:
            return Decoded(text, declared, where)
        return Decoded(text, "utf-8", "utf-8" if not text.isascii() else (where or "utf-8"))
    if declared and declared != "utf-8":
        return Decoded(body.decode(declared, "replace"), declared, where)
    guess = guess_codec(body)
    return Decoded(body.decode(guess, "replace"), guess, "guessed")


WESTERN = "cp1252"
# single-byte codecs of Latin-script languages: what an undeclared page with only isolated
# non-ASCII bytes can be
_SINGLE_BYTE_LATIN = ["cp1252", "cp1250", "cp1254", "cp1257", "iso8859_15", "iso8859_2", "iso8859_9",
                      "iso8859_13", "iso8859_16", "mac_roman"]
_ADJACENT_HIGH = re.compile(rb"[\x80-\xff]{2}")
_CHAOS_TIE = 0.01  # charset-normalizer's mess ratio: below this difference two codecs read alike


def guess_codec(body: bytes) -> str:
    """The codec of an undeclared, non-UTF-8 body, Windows-1252 when the evidence is even."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # optional: the fallback is what browsers do
        return WESTERN
    sample = body[:65536]
    isolated = _ADJACENT_HIGH.search(sample) is None
    results = from_bytes(sample, cp_isolation=_SINGLE_BYTE_LATIN if isolated else None)
    best = results.best()
    if best is None:
        return WESTERN
    try:
        western = sample.decode(WESTERN)
    except UnicodeDecodeError:  # bytes Windows-1252 leaves undefined (0x81, 0x8D, ...)
        western = None
    for match in results:
        if match.chaos > best.chaos + _CHAOS_TIE:
            continue
        # as likely as the best, and read as Windows-1252 reads it (German in "cp1250")
        codec = normalise_charset(match.encoding)
        if codec == WESTERN or WESTERN in (normalise_charset(c) for c in match.could_be_from_charset):
            return WESTERN
        if western is not None and codec and sample.decode(codec, "replace") == western:
            return WESTERN
    return normalise_charset(best.encoding) or WESTERN
