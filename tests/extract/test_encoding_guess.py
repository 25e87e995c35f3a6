"""Undeclared legacy encodings (issue #17 item 7): unlabelled Latin-1 HTML was decoded as cp1250
(`très` → `trčs`) with no flag. Real pages of the ScrapingHub set, re-encoded in Windows-1252
with their charset declarations removed, must extract exactly as their UTF-8 originals, and
the guess is recorded in `meta`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import polars as pl
import pytest
from extract_evaluate import load_aeb

from pipeline.extract import Options, extract_shard
from pipeline.extract.encoding import detect_html
from pipeline.schema import RAW_SCHEMA

DECLARATION = re.compile(rb"<meta[^>]*charset[^>]*>", re.I)
WHEN = datetime(2025, 1, 2, tzinfo=UTC)


def raw(url: str, body: bytes, content_type: str) -> dict:
    return {"url": url, "final_url": None, "status": 200, "content_type": content_type, "headers": "{}",
            "body": body, "fetched_at": WHEN, "source": "aeb", "error": None}


@pytest.fixture(scope="module")
def western_pages(shared_data) -> list[tuple[str, bytes, bytes]]:
    """(url, UTF-8 original, undeclared Windows-1252 copy) of every page with non-ASCII text
    that Windows-1252 can hold (109 of the 181)."""
    pages = []
    for page in load_aeb(shared_data / "extraction" / "aeb"):
        text = page.html.decode("utf-8")
        try:
            legacy = DECLARATION.sub(b"", text.encode("cp1252"))
        except UnicodeEncodeError:
            continue
        if not text.isascii():
            pages.append((page.url, page.html, legacy))
    return pages


def test_undeclared_windows_1252_pages_extract_as_their_utf8_originals(western_pages):
    assert len(western_pages) == 109
    rows = [raw(url, original, "text/html; charset=utf-8") for url, original, _ in western_pages]
    rows += [raw(url + "#legacy", legacy, "text/html") for url, _, legacy in western_pages]
    docs = extract_shard(pl.DataFrame(rows, schema=RAW_SCHEMA).lazy(), Options()).frames["main"]
    docs = docs.with_columns(page=pl.col("url").str.replace("#legacy", "", literal=True),
                             legacy=pl.col("url").str.ends_with("#legacy"))
    originals = docs.filter(~pl.col("legacy")).sort("page")
    legacies = docs.filter(pl.col("legacy")).sort("page")
    assert originals.height == legacies.height == 109
    assert legacies["text"].to_list() == originals["text"].to_list()  # was 91 of 109 before
    assert legacies["title"].to_list() == originals["title"].to_list()
    metas = [json.loads(m) for m in legacies["meta"]]
    assert all(m["encoding"] == "cp1252" and m["encoding_guessed"] is True for m in metas)
    assert all("encoding_guessed" not in json.loads(m) for m in originals["meta"])


@pytest.mark.parametrize(("text", "codec", "expected"), [
    ("<p>très</p>", "latin-1", "cp1252"),  # the repro: was big5 here, cp1250 on a page
    ("<p>Il est très gentil. Ça va bien, merci. Où est la gare?</p>", "latin-1", "cp1252"),
    ("<p>Größere Übungen für Käse und Bäume, schöne Grüße.</p>", "cp1252", "cp1252"),
    # real evidence still wins over the Western default
    ("<p>Příliš žluťoučký kůň úpěl ďábelské ódy. Čeština je krásný jazyk, řekl pan Novák.</p>", "cp1250", "cp1250"),
    ("<p>Съешь же ещё этих мягких французских булок, да выпей чаю. Широкая электрификация.</p>", "cp1251", "cp1251"),
    ("<p>日本語の文章です。これはテストのための段落であり、十分な長さがあります。</p>", "shift_jis", "cp932"),
])
def test_guess_prefers_western_when_the_bytes_allow_it(text, codec, expected):
    decoded = detect_html(text.encode(codec))
    assert (decoded.text, decoded.codec, decoded.source) == (text, expected, "guessed")


def test_what_decided_is_recorded():
    page = "<html><head><meta charset='iso-8859-1'></head><body><p>très</p></body></html>"
    assert detect_html(page.encode("latin-1")).source == "meta"
    assert detect_html(page.encode("latin-1"), "text/html; charset=latin-1").source == "header"
    assert detect_html("<p>très</p>".encode()).source == "utf-8"
    assert detect_html(b"\xef\xbb\xbf<p>x</p>").source == "bom"
