"""extract_html on hand-written pages: structure, boilerplate, metadata, encodings, robustness."""

from __future__ import annotations

import codecs

import pytest

from pipeline.extract import ExtractError, extract_html
from pipeline.extract.encoding import decode_html

PROSE = ("The committee met on Tuesday to discuss the budget, and after a long debate it agreed "
         "to fund the new library, the bridge repairs and two more bus routes next year. ")

ARTICLE = f"""<!DOCTYPE html>
<html lang="en-GB"><head><meta charset="utf-8">
<title>Budget agreed | Town News</title>
<meta name="description" content="The town budget for next year.">
<meta property="article:published_time" content="2025-03-04T10:00:00Z">
<link rel="canonical" href="https://news.example/budget">
</head><body>
<header class="site-header"><a href="/">Town News</a><nav><ul>
  <li><a href="/a">Home</a></li><li><a href="/b">Politics</a></li><li><a href="/c">Sport</a></li>
</ul></nav></header>
<div id="cookie-banner">We use cookies to improve your experience. Accept all cookies?</div>
<main><article>
  <h1>Budget agreed</h1>
  <p>{PROSE * 2}</p>
  <h2>What it pays for</h2>
  <ul><li>A new library in the centre</li><li>Repairs to the old bridge</li></ul>
  <ol><li>First route</li><li>Second route</li></ol>
  <p>{PROSE}</p>
  <table><tr><th>Item</th><th>Cost</th></tr><tr><td>Library</td><td>2.1m</td></tr></table>
  <pre>total = sum(costs)
print(total)</pre>
  <div class="share-buttons"><a href="/s1">Share on Facebook</a> <a href="/s2">Tweet</a></div>
</article></main>
<aside class="sidebar"><h3>Most read</h3><ul><li><a href="/x">Other story one</a></li></ul></aside>
<footer>Copyright 2025 Town News. All rights reserved.</footer>
</body></html>"""


def test_article_structure_and_boilerplate():
    result = extract_html(ARTICLE.encode(), "https://news.example/budget?utm=1")
    text = result["text"]
    assert result["title"] == "Budget agreed"
    assert text.startswith("Budget agreed\n\n")
    assert "\n\nWhat it pays for\n\n" in text  # a heading on its own line
    assert "- A new library in the centre\n\n- Repairs to the old bridge" in text
    assert "1. First route\n\n2. Second route" in text
    assert "Item | Cost\n\nLibrary | 2.1m" in text
    assert "total = sum(costs)\nprint(total)" in text  # code keeps its lines
    for boilerplate in ("Politics", "cookies", "Share on Facebook", "Most read", "Copyright"):
        assert boilerplate not in text
    assert result["lang"] == "en-GB"
    assert result["canonical"] == "https://news.example/budget"
    assert result["date"] == "2025-03-04T10:00:00Z"
    assert result["description"] == "The town budget for next year."


def test_content_spread_over_sections_is_kept_together():
    sections = "".join(
        f"<section class='block'><h2>Part {i}</h2><p>{PROSE}</p></section>" for i in range(4)
    )
    page = (f"<html><body><div class='menu'><a href='/'>Home</a></div><div id='wrap'>{sections}"
            "</div><div><a href='/1'>Privacy</a> <a href='/2'>Terms</a></div></body></html>")
    text = extract_html(page)["text"]
    assert [f"Part {i}" in text for i in range(4)] == [True] * 4
    assert text.count("The committee met") == 4
    assert "Privacy" not in text


def test_forum_posts_are_all_kept():
    posts = "".join(
        f"<div class='post'><div class='author'><a href='/u/{i}'>user{i}</a></div>"
        f"<div class='post-body'><p>Reply {i}: {PROSE}</p></div></div>" for i in range(5)
    )
    page = f"<html><body><nav><a href='/'>Forum</a></nav><div id='thread'>{posts}</div></body></html>"
    text = extract_html(page)["text"]
    assert all(f"Reply {i}:" in text for i in range(5))


def test_layout_tables_like_pydoc_keep_the_documentation():
    rows = "".join(
        f"<dl><dt><a name='f{i}'><strong>func{i}</strong></a>(x)</dt><dd><tt>Return x plus {i}, "
        "rounded to the nearest integer, or raise ValueError.</tt></dd></dl>" for i in range(6)
    )
    page = ("<html><head><title>Python: module demo</title></head><body>"
            "<table class='heading'><tr><td><big><strong>demo</strong></big></td>"
            "<td><a href='.'>index</a></td></tr></table>"
            "<p><tt>A&nbsp;module&nbsp;that&nbsp;demonstrates&nbsp;things.</tt></p>"
            f"<table class='section'><tr><td colspan=3>Functions</td></tr><tr><td>&nbsp;</td>"
            f"<td>{rows}</td></tr></table></body></html>")
    result = extract_html(page)
    assert result["title"] == "Python: module demo"
    assert all(f"func{i}(x)" in result["text"] for i in range(6))
    assert "Return x plus 5, rounded" in result["text"]


def test_product_grid_without_prose_falls_back_to_the_page():
    cards = "".join(
        f"<div class='card'><a href='/p/{i}'>Trail shoe model {i}</a><span>$ {90 + i}</span></div>"
        for i in range(30)
    )
    page = f"<html><body><nav><a href='/'>Shop</a></nav><div class='grid'>{cards}</div></body></html>"
    text = extract_html(page)["text"]
    assert "Trail shoe model 0" in text and "Trail shoe model 29" in text
    assert "Shop" not in text


def test_encoding_from_header_meta_and_bom():
    word = "Crème brûlée à la façon de grand-mère"
    page = f"<html><head><title>t</title></head><body><p>{word}. {PROSE}</p></body></html>"
    # declared in the HTTP header only
    assert word in extract_html(page.encode("cp1252"), content_type="text/html; charset=windows-1252")["text"]
    # declared in a meta tag only
    meta = page.replace("<head>", '<head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">')
    result = extract_html(meta.encode("latin-1"))
    assert word in result["text"] and result["encoding"] == "cp1252"
    # a header that says Latin-1 over UTF-8 bytes: valid UTF-8 wins
    assert word in extract_html(page.encode(), content_type="text/html; charset=iso-8859-1")["text"]
    # UTF-16 with a BOM, no declaration
    assert word in extract_html(codecs.BOM_UTF16_LE + page.encode("utf-16-le"))["text"]
    # Shift_JIS declared in meta
    japanese = "日本語の文章です。これはテストのための段落であり、十分な長さがあります。" * 3
    sjis = f'<html><head><meta charset="shift_jis"></head><body><p>{japanese}</p></body></html>'
    assert japanese in extract_html(sjis.encode("shift_jis"))["text"]


def test_mixed_encodings_do_not_raise():
    # UTF-8 page with a stray Latin-1 byte: declared UTF-8, the bad byte becomes U+FFFD
    body = f"<html><head><meta charset='utf-8'></head><body><p>Déjà vu {PROSE}</p>".encode()
    body += b"<p>caf\xe9 au lait, " + PROSE.encode() + b"</p></body></html>"
    text = extract_html(body)["text"]
    assert "Déjà vu" in text and "caf\ufffd au lait" in text
    text, codec = decode_html(b"<p>na\xefve</p>")  # undeclared, not UTF-8: a guess, no error
    assert text.startswith("<p>na") and codec


def test_broken_and_truncated_html():
    broken = f"<html><body><div><p>{PROSE}<p>Second <b>bold <i>para</b> graph {PROSE}</div></span></td>"
    text = extract_html(broken)["text"]
    assert "Second bold para graph" in text
    truncated = ARTICLE.encode()[: len(ARTICLE) // 2]
    assert "Budget agreed" in extract_html(truncated)["text"]
    assert "The committee met" in extract_html(f"<p>{PROSE}".encode())["text"]  # a fragment


def test_deeply_nested_markup():
    depth = 5000
    page = "<html><body>" + "<div>" * depth + f"<p>{PROSE}</p>" + "</div>" * depth + "</body></html>"
    assert "The committee met" in extract_html(page)["text"]
    spans = "<p>" + "<span>" * depth + PROSE + "</span>" * depth + "</p>"
    assert "The committee met" in extract_html(f"<html><body>{spans}</body></html>")["text"]


def test_ten_megabyte_page():
    paragraphs = "".join(f"<p>Paragraph {i}. {PROSE}</p>" for i in range(56_000))
    page = f"<html><body><nav><a href='/'>Home</a></nav><article>{paragraphs}</article></body></html>"
    assert len(page) > 10_000_000
    text = extract_html(page.encode())["text"]
    assert text.startswith("Paragraph 0.") and "Paragraph 55999." in text


@pytest.mark.parametrize("body, reason", [
    (b"", "empty"),
    (b"   \n\t ", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "binary"),
    (b"%PDF-1.7\n\x00\x01\x02\x03\x04\x05binarystream", "binary"),
])
def test_unparsable_input_raises(body, reason):
    with pytest.raises(ExtractError, match=reason):
        extract_html(body)


def test_str_input_and_no_body():
    assert extract_html("just some words, no markup at all. " * 5)["text"].startswith("just some words")
    result = extract_html("<html><head><title>Only a title</title></head></html>")
    assert result["title"] == "Only a title" and result["text"] == ""
