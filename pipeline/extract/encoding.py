"""Bytes → text for HTML pages: BOM, then valid UTF-8, then the declared charset, then a guess.

Order and why:
1. a byte-order mark is unambiguous;
2. bytes that decode as strict UTF-8 and contain non-ASCII are UTF-8 whatever the page says
   (a header saying ISO-8859-1 over UTF-8 bytes is the most common mislabelling on the web,
   and real Latin-1/CJK text with non-ASCII bytes almost never passes strict UTF-8);
   pure ASCII is decoded the same by every ASCII-compatible charset;
3. the HTTP `Content-Type` charset, then `<meta charset>` / `<meta http-equiv>` in the first
   4 KB (UTF-16/32 declarations win over step 2, since their bytes are not ASCII-compatible);
4. charset-normalizer when installed, else Windows-1252 (the WHATWG default for Latin-1
   labels), with replacement characters for undecodable bytes.
"""

from __future__ import annotations

import codecs
import re

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


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str]:
    """(text, codec used) for an HTML body; never raises on bad bytes (they become U+FFFD)."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(codec, "replace"), codec
    declared, _where = declared_charset(body, content_type)
    if declared and declared.startswith(("utf-16", "utf-32")):
        return body.decode(declared, "replace"), declared
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        # declared UTF-8 with a few bad bytes, or a body cut inside its last character
        if declared == "utf-8" or (declared is None and error.start >= len(body) - 3):
            return body.decode("utf-8", "replace"), "utf-8"
    else:
        return text, ("utf-8" if not text.isascii() or not declared else declared)
    if declared and declared != "utf-8":
        return body.decode(declared, "replace"), declared
    guess = _guess(body)
    return body.decode(guess, "replace"), guess


def _guess(body: bytes) -> str:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # optional: the fallback below is what browsers do
        return "cp1252"
    best = from_bytes(body[:65536]).best()
    return normalise_charset(best.encoding) if best is not None else "cp1252"
