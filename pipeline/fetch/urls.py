"""URLs: canonical form (so a page is fetched once), crawl scope, and the address guard.

`canonical_url` lower-cases scheme and host, drops default ports, fragments and `.`/`..`
segments, and optionally sorts the query, so `HTTP://Example.com:80/a/../b#x` and
`http://example.com/b` are one page. `is_public_address` is what the resolver and the
redirect check use to refuse private, loopback, link-local and other non-public targets.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from urllib.parse import parse_qsl, quote, unquote, urlencode, urljoin, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
SCHEMES = frozenset(DEFAULT_PORTS)


class UrlError(ValueError):
    """A URL that cannot be fetched: bad syntax, a non-http(s) scheme, a forbidden address."""


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: resolve `.` and `..` in a path."""
    if "." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
            continue
        if segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(segment)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


# characters left as they are inside a path / query (RFC 3986 unreserved + sub-delims + ':@/')
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = "/:@!$'()*+,;?-._~%"


def canonical_url(url: str, base: str | None = None, sort_query: bool = True) -> str:
    """The canonical form of URL (resolved against BASE first); raises UrlError if unusable."""
    url = url.strip()
    if base is not None:
        url = urljoin(base, url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UrlError(f"bad url {url!r}: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UrlError(f"scheme {scheme or '(none)'!r} is not http(s): {url!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlError(f"no host in {url!r}")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host.lower()
    except UnicodeError:
        raise UrlError(f"bad host in {url!r}") from None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = quote(unquote(remove_dot_segments(parts.path or "/")), safe=_PATH_SAFE)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if sort_query:
            pairs.sort()
        query = urlencode(pairs, safe=_QUERY_SAFE)
    return urlunsplit((scheme, netloc, path, query, ""))


def host_of(url: str) -> str:
    """`host[:port]` of a canonical URL: the unit of politeness (robots.txt, delay, per-host)."""
    return urlsplit(url).netloc


# IPv6 ranges that carry an IPv4 address in their last 32 bits: IPv4-compatible (::a.b.c.d,
# deprecated but still routed to the v4 address by some stacks) and the NAT64 well-known prefix
_EMBEDS_V4_LOW = (ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("64:ff9b::/96"))
# IPv6 ranges that are never public whatever Python's tables say (they change between versions)
_NEVER_PUBLIC_V6 = (
    ipaddress.IPv6Network("fec0::/10"),  # site-local (deprecated, still honoured by some hosts)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # NAT64 for local use (RFC 8215)
)
# legacy IPv4 spellings that resolvers accept: 2130706433, 0x7f000001, 0177.0.0.1, 127.1
_LEGACY_V4 = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")


def is_public_address(address: str) -> bool:
    """False for private, loopback, link-local, multicast, reserved and unspecified addresses,
    and for IPv6 forms that lead to such an IPv4 address (IPv4-mapped ::ffff:a.b.c.d,
    IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::a.b.c.d, 6to4 2002:AABB:CCDD::) or to a
    site-local one (fec0::/10)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in _NEVER_PUBLIC_V6):
            return False
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and any(ip in network for network in _EMBEDS_V4_LOW):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast


def literal_ip(host: str) -> str | None:
    """The address if HOST (without port) is an IP literal, else None. Legacy IPv4 spellings
    that the system resolver turns into an address (decimal `2130706433`, hex `0x7f.1`, octal
    `0177.0.0.1`, short `127.1`) count as literals and are returned in dotted form."""
    host = host.strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _LEGACY_V4.fullmatch(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_url_address(url: str, allow_private: bool) -> None:
    """Refuse a URL whose host is a literal non-public IP (names are checked at DNS time)."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        raise UrlError(f"refused: {host} is a loopback name (use --allow-private)")
    ip = literal_ip(host)
    if ip is not None and not is_public_address(ip):
        shown = ip if ip == host.strip("[]") else f"{host} ({ip})"
        raise UrlError(f"refused: {shown} is a private/loopback/link-local address (use --allow-private)")


class Scope:
    """Which links a crawl follows: `same-host`, `same-domain` (subdomains too) or `prefix`."""

    def __init__(self, kind: str, seeds: list[str]):
        self.kind = kind
        self.hosts = {host_of(s) for s in seeds}
        self.domains = {_domain(urlsplit(s).hostname or "") for s in seeds}
        self.prefixes = tuple(s[: s.rfind("/") + 1] for s in seeds)

    def allows(self, url: str) -> bool:
        if self.kind == "same-host":
            return host_of(url) in self.hosts
        if self.kind == "prefix":
            return url.startswith(self.prefixes)
        host = urlsplit(url).hostname or ""
        return any(host == d or host.endswith("." + d) for d in self.domains)


class UrlPatterns:
    """`include` / `exclude` URL patterns of a crawl: regular expressions searched in the
    canonical URL, or shell globs matched against the whole URL when written `glob:PATTERN`.
    A URL passes when it matches an include pattern (or there are none) and no exclude one."""

    def __init__(self, include: list[str], exclude: list[str]):
        self.include = [compile_url_pattern(p) for p in include]
        self.exclude = [compile_url_pattern(p) for p in exclude]

    def allows(self, url: str) -> bool:
        if self.include and not any(p.search(url) for p in self.include):
            return False
        return not any(p.search(url) for p in self.exclude)


def compile_url_pattern(pattern: str) -> re.Pattern[str]:
    """A compiled include/exclude pattern (see UrlPatterns); raises re.error for a bad regex."""
    if pattern.startswith("glob:"):
        return re.compile(fnmatch.translate(pattern[len("glob:"):]))
    return re.compile(pattern)


def _domain(host: str) -> str:
    return host[4:] if host.startswith("www.") else host
