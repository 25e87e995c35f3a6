"""robots.txt (RFC 9309): groups by user agent, longest-match Allow/Disallow with `*` and `$`.

The standard library's `urllib.robotparser` applies the first matching rule and knows no
wildcards; real sites (and Google, and Scrapy's Protego) use the longest match, so this small
parser does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


@dataclass
class _Group:
    agents: list[str] = field(default_factory=list)
    rules: list[tuple[int, bool, re.Pattern[str]]] = field(default_factory=list)  # (length, allow, rx)
    crawl_delay: float | None = None


def _pattern(path: str) -> re.Pattern[str]:
    anchored = path.endswith("$")
    body = path[:-1] if anchored else path
    regex = ".*".join(re.escape(unquote(part)) for part in body.split("*"))
    return re.compile(regex + ("$" if anchored else ""))


class Robots:
    """Parsed robots.txt. `allow_all()` / `disallow_all()` stand for a 4xx / unreachable file."""

    def __init__(self, text: str = "", default_allow: bool = True):
        self.default_allow = default_allow
        self.refused: str | None = None  # the address guard's reason, when robots.txt was refused
        self.groups: list[_Group] = []
        self.sitemaps: list[str] = []
        self._parse(text)

    @classmethod
    def allow_all(cls) -> Robots:
        return cls("", True)

    @classmethod
    def disallow_all(cls) -> Robots:
        return cls("", False)

    def _parse(self, text: str) -> None:
        group: _Group | None = None
        in_agents = False
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if ":" not in line:
                continue
            key, value = (s.strip() for s in line.split(":", 1))
            key = key.lower()
            if key == "user-agent":
                if group is None or not in_agents:
                    group = _Group()
                    self.groups.append(group)
                group.agents.append(value.lower())
                in_agents = True
                continue
            if key == "sitemap":
                self.sitemaps.append(value)
                continue
            in_agents = False
            if group is None:
                continue
            if key in ("allow", "disallow"):
                if not value:
                    continue  # "Disallow:" with no path allows everything
                group.rules.append((len(value), key == "allow", _pattern(value)))
            elif key == "crawl-delay":
                try:
                    group.crawl_delay = float(value)
                except ValueError:
                    pass

    def _group_for(self, agent: str) -> _Group | None:
        agent = agent.lower()
        token = agent.split("/", 1)[0]
        best, best_len = None, -1
        for group in self.groups:
            for name in group.agents:
                if name != "*" and name in token and len(name) > best_len:
                    best, best_len = group, len(name)
        if best is not None:
            return best
        return next((g for g in self.groups if "*" in g.agents), None)

    def allowed(self, url: str, agent: str) -> bool:
        if not self.groups:
            return self.default_allow
        group = self._group_for(agent)
        if group is None:
            return True
        parts = urlsplit(url)
        path = unquote(parts.path or "/") + (f"?{unquote(parts.query)}" if parts.query else "")
        if path == "/robots.txt":
            return True
        verdict, length = True, -1
        for rule_len, allow, rx in group.rules:
            if rx.match(path) and (rule_len > length or (rule_len == length and allow)):
                verdict, length = allow, rule_len
        return verdict

    def crawl_delay(self, agent: str) -> float | None:
        group = self._group_for(agent) if self.groups else None
        return group.crawl_delay if group else None
