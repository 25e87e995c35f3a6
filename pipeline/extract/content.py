"""Main-content extraction from one HTML page with lxml: `extract_html(html, url) -> dict`.

How it works (one parse, one pruning pass, one text walk, one scoring pass):
1. Decode (pipeline.extract.encoding) and parse with libxml2's forgiving HTML parser.
2. Read metadata from the head: title, `og:title`, description, canonical URL, date, language.
3. Prune what is never content: scripts, styles, forms controls, embedded media, hidden
   elements (`hidden`, `aria-hidden`, `display:none`), landmark boilerplate (`nav`, `aside`,
   `footer`, page-level `header`, ARIA roles) and elements whose class/id tokens say cookie
   banner, share bar, sidebar, breadcrumb, related links, newsletter, ... (unless a token also
   says article/content/main, as in readability).
4. Walk the tree once (`etree.iterwalk`) and cut it into text blocks at block-level tags; each
   block knows its owner element, its characters and how many of them are link text.
5. Give every block a weight: positive for text that reads like prose (long, punctuated, few
   links), negative for link lists and short fragments, and add it to the owner and every
   ancestor. The element with the highest sum is the main-content container: the smallest
   subtree that holds the content mass without the boilerplate mass around it, which also
   spans content spread over several sibling sections. Tag and class/id evidence adjust sums.
6. Emit the container's blocks, dropping link-dense and known-boilerplate fragments inside it;
   headings, list items (`- `, `1. `), table rows (cells joined by ` | `) and `<pre>` code keep
   their shape; blocks are separated by blank lines.
"""

from __future__ import annotations

import re
import threading
from collections import Counter

from lxml import etree

from pipeline.extract.encoding import Decoded, detect_html


class ExtractError(ValueError):
    """The bytes are not an HTML page we can parse (binary, empty, no elements)."""


# -- parsing -----------------------------------------------------------------------------------
_LOCAL = threading.local()


def _parser() -> etree.HTMLParser:
    parser = getattr(_LOCAL, "parser", None)
    if parser is None:  # parsers are not thread-safe; one per thread
        parser = etree.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True,
                                  no_network=True, huge_tree=True, recover=True)
        _LOCAL.parser = parser
    return parser


def looks_binary(body: bytes) -> bool:
    """NUL bytes or many control bytes in the first 2 KB (and no UTF-16/32 BOM): not a page."""
    head = body[:2048]
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head[:3] == b"\xef\xbb\xbf":
        return False
    if b"\x00" in head:
        return True
    control = sum(1 for b in head if b < 9 or 13 < b < 32)
    return control > len(head) * 0.05


def parse_html(html: bytes | str, content_type: str | None = None) -> tuple[etree._Element, Decoded]:
    """(root element, how the bytes were decoded); raises ExtractError for binary or empty input."""
    if isinstance(html, str):
        text, encoding = html, Decoded(html, "str", "str")
    else:
        if looks_binary(html):
            raise ExtractError("binary")
        encoding = detect_html(html, content_type)
        text = encoding.text
    if not text.strip():
        raise ExtractError("empty")
    data = text.encode("utf-8", "replace")
    try:
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError) as error:
        raise ExtractError(f"unparsable: {error}") from None
    if root is None:
        raise ExtractError("unparsable: no elements")
    if any(e.type_name == "ERR_RESOURCE_LIMIT" for e in _parser().error_log):
        # libxml2 stops at depth 2048 and drops what is deeper: parse a flattened copy
        root = etree.fromstring(flatten_markup(text).encode("utf-8", "replace"), _parser())
    return root, encoding


_INLINE_TAG = re.compile(
    r"</?(?:span|font|b|i|em|strong|small|big|u|s|sub|sup|tt|code|label|abbr|cite|q|mark)\b[^>]*>", re.I)
_CONTAINER_OPEN = re.compile(
    r"<(?:div|section|article|main|aside|header|footer|nav|center|blockquote|ul|ol|dl|table|"
    r"tbody|thead|tr|td|th|li|dd|dt|form|fieldset|figure)\b[^>]*>", re.I)
_CONTAINER_CLOSE = re.compile(
    r"</(?:div|section|article|main|aside|header|footer|nav|center|blockquote|ul|ol|dl|table|"
    r"tbody|thead|tr|td|th|li|dd|dt|form|fieldset|figure)\s*>", re.I)


def flatten_markup(text: str) -> str:
    """Pathologically deep markup → flat paragraphs (inline tags dropped, containers → <p>)."""
    text = _INLINE_TAG.sub("", text)
    text = _CONTAINER_OPEN.sub("<p>", text)
    return _CONTAINER_CLOSE.sub("", text)


# -- metadata ----------------------------------------------------------------------------------
_DATE_KEYS = (
    "article:published_time", "datepublished", "date", "dc.date", "dc.date.issued",
    "dcterms.created", "pubdate", "publishdate", "og:published_time", "sailthru.date",
    "article.published", "published-date", "parsely-pub-date", "article:modified_time",
    "datemodified", "last-modified",
)


def _clean(text: str | None) -> str:
    return " ".join(text.split()) if text else ""


def read_metadata(root: etree._Element) -> dict[str, str]:
    """title, og_title, description, canonical, date, lang, from the head (and <time>)."""
    meta: dict[str, str] = {}
    lang = root.get("lang") or root.get("{http://www.w3.org/XML/1998/namespace}lang") or root.get("xml:lang")
    dates: dict[str, str] = {}
    for el in root.iter("title", "meta", "link", "time"):
        tag = el.tag
        if tag == "title":
            meta.setdefault("title", _clean("".join(el.itertext())))
        elif tag == "meta":
            key = (el.get("property") or el.get("name") or el.get("itemprop") or el.get("http-equiv") or "").strip().lower()
            content = _clean(el.get("content"))
            if not key or not content:
                continue
            if key == "og:title":
                meta.setdefault("og_title", content)
            elif key == "og:site_name":
                meta.setdefault("site_name", content)
            elif key in ("description", "og:description"):
                meta.setdefault("description", content)
            elif key == "content-language" and not lang:
                lang = content
            elif key in _DATE_KEYS:
                dates.setdefault(key, content)
        elif tag == "link":
            if (el.get("rel") or "").strip().lower() == "canonical" and el.get("href"):
                meta.setdefault("canonical", el.get("href").strip())
        elif tag == "time" and "time" not in dates:
            value = el.get("datetime")
            if value:
                dates["time"] = value.strip()
    for key in (*_DATE_KEYS, "time"):
        if key in dates:
            meta["date"] = dates[key]
            break
    if lang:
        meta["lang"] = lang.strip().split(",")[0].strip()
    return meta


# -- pruning -----------------------------------------------------------------------------------
_DROP_TAGS = (
    "script", "style", "template", "svg", "math", "iframe", "object", "embed",
    "canvas", "button", "select", "input", "textarea", "option", "datalist", "audio", "video",
    "source", "track", "map", "area", "dialog", "head", "link", "meta",
)
_LANDMARKS = ("nav", "aside", "footer", "header", "menu")
_BOILER_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "dialog",
                 "alertdialog", "menu", "menubar", "alert"}
_TOKEN = re.compile(r"[a-z0-9]+")
# class/id tokens that mark boilerplate (whole tokens after splitting on -, _ and spaces)
_NEGATIVE = frozenset("""
    nav navbar navigation menu menubar submenu megamenu sidebar sidebars breadcrumb breadcrumbs
    crumbs footer cookie cookies consent gdpr onetrust cmp share sharing sharebar social
    socials newsletter subscribe subscription signup popup modal overlay advert advertisement
    advertising ads adsense sponsor sponsored related recommended outbrain taboola skip
    skiplink pagination pager toolbar masthead topbar offcanvas disqus byline copyright
    comments commentlist respond trending popular mostpopular recirc recirculation promo
    promotion tagcloud tags bio dropdown
    user-info userinfo post-signature signature postprofile usercard author-box authorbox
    author-bio about-author votecell post-menu entry-meta post-meta entry-footer post-footer
    article-footer site-header comment-respond
""".split())
_POSITIVE = frozenset("""
    article content main post entry body text story blog hentry prose markdown richtext
    maincontent postcontent entrycontent articlebody
""".split())
PROTECTED_SHARE = 0.3  # of the page's non-link text: more than this is never pruned by name
MIN_PROTECTED_CHARS = 300
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def _class_tokens(el: etree._Element) -> list[str]:
    """Words of class and id: whole names ("user-info") and their parts ("user", "info")."""
    attrs = ((el.get("class") or "") + " " + (el.get("id") or "")).lower()
    if not attrs.strip():
        return []
    return attrs.split() + _TOKEN.findall(attrs)


def prune(body: etree._Element) -> None:
    """Remove what is never main content, in place (tails are kept: they belong to the parent)."""
    etree.strip_elements(body, *_DROP_TAGS, with_tail=False)
    doomed = []
    for el in body.iter("noscript"):
        # tracking pixels and "enable JavaScript" notes, but some sites (Discourse) serve
        # their whole crawler view inside <noscript>
        if len("".join(el.itertext())) < 500:
            doomed.append(el)
    for el in doomed:
        _remove_keep_tail(el)
    doomed = []
    for el in body.iter():
        tag = el.tag
        if not isinstance(tag, str) or el is body:
            continue
        if el.get("hidden") is not None or el.get("aria-hidden") == "true":
            doomed.append(el)
            continue
        style = el.get("style")
        if style and _HIDDEN_STYLE.search(style):
            doomed.append(el)
            continue
        role = el.get("role")
        if role and role in _BOILER_ROLES:
            doomed.append(el)
            continue
        if tag in _LANDMARKS:
            if tag == "header" and _inside_article(el):
                continue  # an article's own header holds its title
            doomed.append(el)
            continue
        if tag in ("html", "main", "article"):
            continue
        if tag == "a" and _is_permalink(el):
            doomed.append(el)  # Sphinx's `¶` and its kin: a heading's anchor, not its text
            continue
        tokens = _class_tokens(el)
        if tokens and not _POSITIVE.intersection(tokens) and _NEGATIVE.intersection(tokens):
            doomed.append(el)
    if not doomed:
        return
    # Markup lies: whole pages sit in a div called "overlay-section", a "with-nav-sidebar"
    # wrapper or a hidden streaming <div hidden>. An element holding a large share of the
    # page's non-link text is kept whatever its name says (its parts are still judged).
    protect_at = max(MIN_PROTECTED_CHARS, PROTECTED_SHARE * _nonlink_chars(body))
    for el in doomed:
        if not _attached(el, body):
            continue  # inside an element removed already
        if _nonlink_chars(el) >= protect_at:
            continue
        _remove_keep_tail(el)


def _nonlink_chars(el: etree._Element) -> int:
    total = sum(len(t.strip()) for t in el.itertext())
    links = sum(len(t.strip()) for a in el.iter("a") if a.get("href") is not None
                for t in a.itertext())
    return total - links


def _attached(el: etree._Element, body: etree._Element) -> bool:
    for anc in el.iterancestors():
        if anc is body:
            return True
    return False


def _inside_article(el: etree._Element) -> bool:
    return any(a.tag in ("article", "main") for a in el.iterancestors())


# what documentation generators put after a heading as its permalink (Sphinx, MkDocs, Hugo, ...)
_PERMALINK_MARKS = frozenset({"¶", "#", "§", "🔗", "\u00b6\ufe0e", "link"})
_PERMALINK_CLASSES = frozenset({"headerlink", "anchorlink", "anchor-link", "header-anchor", "heading-anchor",
                                "permalink", "hash-link"})


def _is_permalink(el: etree._Element) -> bool:
    if _PERMALINK_CLASSES.intersection(_class_tokens(el)):
        return True
    href = el.get("href") or ""
    return href.startswith("#") and "".join(el.itertext()).strip() in _PERMALINK_MARKS


def _remove_keep_tail(el: etree._Element) -> None:
    parent = el.getparent()
    if parent is None:
        return
    if el.tail:
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    parent.remove(el)


# -- blocks ------------------------------------------------------------------------------------
_BLOCK_TAGS = frozenset("""
    p div section article main h1 h2 h3 h4 h5 h6 li ul ol dl dd dt pre blockquote table tr
    thead tbody tfoot caption figure figcaption form fieldset legend header footer address hr
    body center details summary nav aside html dialog
""".split())
_HEADINGS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6"))
_BR = "\x0b"  # a <br>: a line break inside a block (source newlines are just whitespace)


class Block:
    __slots__ = ("owner", "text", "chars", "link_chars", "kind", "weight", "words")

    def __init__(self, owner, text, link_chars, kind):
        self.owner = owner
        self.text = text
        self.chars = len(text)
        self.link_chars = min(link_chars, self.chars)
        self.kind = kind
        self.words = text.count(" ") + 1
        self.weight = 0.0


def text_blocks(body: etree._Element) -> list[Block]:
    """Cut the (pruned) tree into text blocks in document order."""
    blocks: list[Block] = []
    buf: list[str] = []
    stack: list[etree._Element] = []
    link_chars = 0
    link_depth = 0
    ol_counters: dict[etree._Element, int] = {}

    def flush() -> None:
        nonlocal link_chars
        if not buf:
            return
        raw = "".join(buf)
        buf.clear()
        found_links, link_chars = link_chars, 0
        owner = stack[-1] if stack else body
        tag = owner.tag
        if tag == "pre":
            text = raw.replace(_BR, "\n").strip("\n")
            if not text.strip():
                return
            blocks.append(Block(owner, text, found_links, "pre"))
            return
        if _BR in raw:
            lines = (" ".join(part.split()) for part in raw.split(_BR))
            text = "\n".join(line for line in lines if line)
        else:
            text = " ".join(raw.split())
        if not text or text == "|":
            return
        text = text.strip(" |")
        if tag in _HEADINGS:
            kind = tag
        elif tag == "li":
            parent = owner.getparent()
            if parent is not None and parent.tag == "ol":
                n = ol_counters.get(parent, 0) + 1
                ol_counters[parent] = n
                text = f"{n}. {text}"
            else:
                text = f"- {text}"
            kind = "li"
        elif tag in ("tr", "td", "th"):
            kind = "tr"
        else:
            kind = tag
        blocks.append(Block(owner, text, found_links, kind))

    for event, el in etree.iterwalk(body, events=("start", "end")):
        tag = el.tag
        if not isinstance(tag, str):
            continue
        if event == "start":
            if tag in _BLOCK_TAGS:
                flush()
                stack.append(el)
            elif tag == "br":
                buf.append(_BR)
            elif tag in ("td", "th"):
                if buf and "".join(buf).strip():
                    buf.append(" | ")
                if not stack or stack[-1].tag != "tr":
                    stack.append(el)
            elif tag == "a" and el.get("href") is not None:  # <a name> anchors are not links
                link_depth += 1
            elif tag == "img":
                continue
            if el.text:
                buf.append(el.text)
                if link_depth:
                    link_chars += len(el.text.strip())
        else:
            if tag in _BLOCK_TAGS:
                flush()
                if stack and stack[-1] is el:
                    stack.pop()
            elif tag in ("td", "th"):
                if stack and stack[-1] is el:
                    flush()
                    stack.pop()
            elif tag == "a" and el.get("href") is not None:
                link_depth -= 1
            if el.tail and el is not body:
                buf.append(el.tail)
                if link_depth:
                    link_chars += len(el.tail.strip())
    flush()
    return blocks


# -- scoring -----------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"[.!?。！？:;](\s|$)")


NARROW_ITEMPROP_SHARE = 0.1  # itemprop=articleBody holding this share of the prose wins
NARROW_UNIQUE_SHARE = 0.3  # ... or this share when no other element carries its name
NARROW_SHARE = 0.5  # a named article body holding this share of the container's prose wins


def block_weight(block: Block) -> float:
    """Positive for prose, negative for link lists and fragments (in characters)."""
    chars = block.chars
    density = block.link_chars / chars if chars else 1.0
    if block.kind in _HEADINGS:
        return 0.0 if density < 0.5 else -chars
    if density > 0.5:
        return -chars * density
    if block.kind == "pre":
        return chars * 0.5
    if block.words < 4:  # labels, prices, signatures: neutral unless they are links
        return -float(block.link_chars)
    punctuated = block.text.count(",") + len(_SENTENCE_END.findall(block.text))
    factor = 1.0 if punctuated else 0.4
    if block.words < 10:
        factor *= 0.5
    return chars * factor * (1.0 - 2.0 * density)


_STRONG = re.compile(
    r"articlebody|article[-_]{0,2}(?:body|content|text)|entry[-_]?content|post[-_]?(?:body|content|text)"
    r"|story[-_]?(?:body|content|text)|main[-_]?content|content[-_]?(?:body|main)|rich[-_]?text"
    r"|body[-_]?text|markdown[-_]?body|field--name-body|paywall|blog[-_]?(?:post|content)", re.I)


def _strong_evidence(el: etree._Element) -> bool:
    itemprop = el.get("itemprop")
    if itemprop in ("articleBody", "text", "reviewBody"):
        return True
    attrs = (el.get("class") or "") + " " + (el.get("id") or "")
    return bool(attrs.strip()) and _STRONG.search(attrs) is not None


def choose_container(blocks: list[Block], body: etree._Element) -> etree._Element:
    """The element whose subtree maximises the summed block weight, narrowed to a named
    article body inside it when that holds most of its prose."""
    score: dict[etree._Element, float] = {}
    positive: dict[etree._Element, float] = {}
    for block in blocks:
        block.weight = w = block_weight(block)
        owner = block.owner
        score[owner] = score.get(owner, 0.0) + w
        if w > 0:
            positive[owner] = positive.get(owner, 0.0) + w
        for anc in owner.iterancestors():
            score[anc] = score.get(anc, 0.0) + w
            if w > 0:
                positive[anc] = positive.get(anc, 0.0) + w
    if not score:
        return body
    best = _best_by_score(score)
    total = positive.get(best, 0.0)
    if total <= 0:
        return best
    strong = [(el, mass) for el, mass in positive.items()
              if el is not best and mass >= NARROW_ITEMPROP_SHARE * total and _strong_evidence(el)
              and _is_descendant(el, best)]
    # a repeated name (forum posts, comment bodies) is one of several: it needs a larger share
    names = Counter((el.tag, el.get("class")) for el, _ in strong)
    narrowed, narrowed_mass = best, 0.0
    for el, mass in strong:
        if el.get("itemprop") == "articleBody":
            share = NARROW_ITEMPROP_SHARE  # schema.org markup is the page saying it outright
        elif names[(el.tag, el.get("class"))] == 1:
            share = NARROW_UNIQUE_SHARE
        else:
            share = NARROW_SHARE
        if mass >= share * total and mass > narrowed_mass:
            narrowed, narrowed_mass = el, mass
    return narrowed


def _is_descendant(el: etree._Element, ancestor: etree._Element) -> bool:
    return any(anc is ancestor for anc in el.iterancestors())


def _best_by_score(score: dict[etree._Element, float]) -> etree._Element:
    for el, value in score.items():
        if value > 0:
            tag = el.tag
            if tag in ("article", "main") or el.get("role") == "main":
                score[el] = value * 1.15
            else:
                tokens = _class_tokens(el)
                if tokens and _POSITIVE.intersection(tokens):
                    score[el] = value * 1.05
    return max(score, key=score.__getitem__)


def _within(block: Block, container: etree._Element) -> bool:
    owner = block.owner
    if owner is container:
        return True
    return any(anc is container for anc in owner.iterancestors())


def select_text(blocks: list[Block], container: etree._Element, link_filter: bool = True) -> list[Block]:
    kept = []
    for block in blocks:
        if not _within(block, container):
            continue
        if link_filter:
            density = block.link_chars / block.chars if block.chars else 1.0
            if density > 0.6 and block.kind not in _HEADINGS and block.words < 40:
                continue
        kept.append(block)
    return kept


FALLBACK_SHARE = 0.25  # kept text under this share of the page → keep the pruned page

_TITLE_SEPARATORS = re.compile(r"\s+(?:[—–|·:»/-]|::)\s+")


def without_site_name(title: str | None, site_name: str | None) -> str | None:
    """TITLE without a leading or trailing `SITE_NAME` part (`X | Site`, `Site — X`)."""
    if not title or not site_name:
        return title
    parts = _TITLE_SEPARATORS.split(title)
    if len(parts) > 1:
        if parts[-1].strip().lower() == site_name.strip().lower():
            return title[: title.rfind(parts[-1])].rstrip(" —–|·:»/-").strip() or title
        if parts[0].strip().lower() == site_name.strip().lower():
            return title[len(parts[0]):].lstrip(" —–|·:»/-").strip() or title
    return title


# -- public ------------------------------------------------------------------------------------
def extract_html(html: bytes | str, url: str | None = None, content_type: str | None = None) -> dict:
    """Main text and metadata of one HTML page.

    Returns a dict with `title`, `text` (paragraphs separated by blank lines, headings on their
    own lines), `lang`, `canonical`, `date`, `description` (None when absent), `encoding` (the
    codec) and `encoding_source` (bom, utf-8, header, meta, guessed, or str for a str page).
    Raises ExtractError("binary" | "empty" | "unparsable: ...") when there is no page to read.
    """
    root, encoding = parse_html(html, content_type)
    meta = read_metadata(root)
    body = root.find("body")
    if body is None:
        body = root
    first_h1 = body.find(".//h1")  # before pruning: an index page's heading may not survive it
    page_h1 = _clean("".join(first_h1.itertext())).rstrip("".join(_PERMALINK_MARKS)).strip() if first_h1 is not None else None
    prune(body)
    blocks = text_blocks(body)
    container = choose_container(blocks, body)
    kept = select_text(blocks, container)
    total = sum(b.chars for b in blocks)
    got = sum(b.chars for b in kept)
    if total and got < FALLBACK_SHARE * total:
        # little prose anywhere (product grids, listings): keep the pruned page
        kept = select_text(blocks, body, link_filter=False)
    text = "\n\n".join(block.text for block in kept)
    h1 = next((b.text for b in kept if b.kind == "h1"), None)
    page_title = meta.get("title")
    if h1 and page_title and h1.lower() in page_title.lower():
        title = h1  # `<title>` is the h1 plus the site's name: "X — Django 3.2 documentation"
    elif page_h1 and page_title and page_title.lower().startswith(page_h1.lower() + " "):
        title = page_h1  # the same for a page whose h1 is not in the text kept (an index page)
    else:
        title = meta.get("og_title") or without_site_name(page_title, meta.get("site_name")) or h1
    return {
        "title": title or None,
        "text": text,
        "lang": meta.get("lang"),
        "canonical": meta.get("canonical"),
        "date": meta.get("date"),
        "description": meta.get("description"),
        "encoding": encoding.codec,
        "encoding_source": encoding.source,
        "url": url,
    }
