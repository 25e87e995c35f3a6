"""URL canonical form, scope, the address guard and robots.txt rules."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.fetch.http import HttpClient, PublicOnlyResolver, RefusedAddress, retry_after_seconds
from pipeline.fetch.robots import Robots
from pipeline.fetch.urls import Scope, UrlError, canonical_url, check_url_address, is_public_address


@pytest.mark.parametrize(("url", "expected"), [
    ("HTTP://Example.COM:80/a/./b/../c#frag", "http://example.com/a/c"),
    ("https://example.com:443", "https://example.com/"),
    ("https://example.com:8443/x", "https://example.com:8443/x"),
    ("http://example.com/p?b=2&a=1&a=0", "http://example.com/p?a=0&a=1&b=2"),
    ("http://example.com/%7Euser/a%20b", "http://example.com/~user/a%20b"),
    ("http://bücher.example/", "http://xn--bcher-kva.example/"),
    ("http://example.com/../../x", "http://example.com/x"),
])
def test_canonical_url(url, expected):
    assert canonical_url(url) == expected


def test_canonical_url_resolves_relative_links_and_refuses_other_schemes():
    assert canonical_url("../c/d.html#x", base="http://h.org/a/b/e.html") == "http://h.org/a/c/d.html"
    assert canonical_url("?q=1", base="http://h.org/a") == "http://h.org/a?q=1"
    assert canonical_url("http://h.org/p?b=1&a=2", sort_query=False) == "http://h.org/p?b=1&a=2"
    for bad in ("mailto:x@y.org", "javascript:void(0)", "ftp://h.org/", "file:///etc/passwd", "http://"):
        with pytest.raises(UrlError):
            canonical_url(bad)


def test_scope():
    seeds = ["http://docs.example.org/guide/index.html"]
    assert Scope("same-host", seeds).allows("http://docs.example.org/other")
    assert not Scope("same-host", seeds).allows("http://api.example.org/")
    assert Scope("same-domain", ["http://www.example.org/"]).allows("http://api.example.org/x")
    assert not Scope("same-domain", ["http://www.example.org/"]).allows("http://example.com/")
    assert Scope("prefix", seeds).allows("http://docs.example.org/guide/part2.html")
    assert not Scope("prefix", seeds).allows("http://docs.example.org/blog/")


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("10.1.2.3", False),
    ("192.168.0.1", False), ("172.16.5.4", False), ("169.254.169.254", False), ("::1", False),
    ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False), ("0.0.0.0", False),
    ("100.64.0.1", False), ("224.0.0.1", False),
])
def test_is_public_address(address, public):
    assert is_public_address(address) is public


def test_address_guard_refuses_literals_names_and_redirect_targets():
    with pytest.raises(UrlError, match="169.254.169.254"):
        check_url_address("http://169.254.169.254/latest/meta-data/", allow_private=False)
    with pytest.raises(UrlError, match="loopback"):
        check_url_address("http://localhost:8080/", allow_private=False)
    check_url_address("http://10.0.0.1/", allow_private=True)

    async def resolve():
        resolver = PublicOnlyResolver()
        try:
            await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()

    with pytest.raises(RefusedAddress, match="non-public address 127.0.0.1"):
        asyncio.run(resolve())

    async def get():
        async with HttpClient(concurrency=1, per_host=1, delay=0, timeout=1, max_bytes=100,
                              user_agent="t", allow_private=False, retries=0) as client:
            return await client.get("http://[::1]:9/")

    response = asyncio.run(get())
    assert response.error.startswith("refused: ::1") and response.status is None


def test_robots_longest_match_wildcards_and_agents():
    robots = Robots("""
User-agent: *
Disallow: /private/
Allow: /private/public/
Disallow: /*.pdf$
Crawl-delay: 2

User-agent: special-bot
Disallow: /

Sitemap: https://h.org/sitemap.xml
""")
    agent = "pipeline-fetch/0.1"
    assert robots.allowed("https://h.org/", agent)
    assert not robots.allowed("https://h.org/private/x", agent)
    assert robots.allowed("https://h.org/private/public/x", agent)
    assert not robots.allowed("https://h.org/doc/a.pdf", agent)
    assert robots.allowed("https://h.org/doc/a.pdf?x=1", agent)
    assert not robots.allowed("https://h.org/anything", "Special-Bot/2.0")
    assert robots.allowed("https://h.org/robots.txt", "special-bot")
    assert robots.crawl_delay(agent) == 2.0
    assert robots.sitemaps == ["https://h.org/sitemap.xml"]
    assert Robots.disallow_all().allowed("https://h.org/", agent) is False
    assert Robots.allow_all().allowed("https://h.org/x", agent) is True


def test_retry_after_forms():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None
