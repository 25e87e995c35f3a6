"""The HTTP client every network source shares: one aiohttp session, polite and bounded.

- one `ClientSession` with a pooled `TCPConnector` (total and per-host connection limits);
- a per-host gate: at most `per_host` requests in flight and request starts at least `delay`
  seconds apart; a 429/503 with `Retry-After` pushes the host's next start back;
- retries with exponential backoff and full jitter on timeouts, connection errors, 429 and 5xx;
- a hard cap on the (decompressed) body, read as a stream, so a huge page or a gzip bomb costs
  at most `max_bytes` of memory;
- an address guard: names resolving only to private, loopback or link-local addresses are
  refused by the resolver (so every connection is checked, redirects included, with the
  address actually connected to), literal IPs before the request.

Redirects are not followed here: the caller follows them hop by hop (scope, robots.txt,
the seen set and the guard apply to every hop).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver

from pipeline.fetch.urls import UrlError, check_url_address, host_of, is_public_address

REDIRECTS = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 523, 524})


class RefusedAddress(OSError):
    """A host name resolved only to non-public addresses and private ones are not allowed."""


class PublicOnlyResolver(AbstractResolver):
    """Resolves with the system resolver and keeps only public addresses (else refuses)."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        public = [info for info in infos if is_public_address(info["host"])]
        if not public:
            found = infos[0]["host"] if infos else "nothing"
            raise RefusedAddress(f"refused: {host} resolves to non-public address {found} (use --allow-private)")
        return public

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class Response:
    """One fetch attempt's outcome. `error` is set when there is no usable body."""

    url: str
    status: int | None = None
    headers: dict[str, str] | None = None
    body: bytes | None = None
    content_type: str | None = None
    error: str | None = None
    attempts: int = 1

    @property
    def headers_json(self) -> str:
        return json.dumps(self.headers or {}, ensure_ascii=False, sort_keys=True)

    @property
    def location(self) -> str | None:
        return (self.headers or {}).get("Location") if self.status in REDIRECTS else None


class HostGate:
    """Per-host politeness: a semaphore of `per_host` slots and a reservation clock for `delay`."""

    def __init__(self, per_host: int, delay: float):
        self.slots = asyncio.Semaphore(per_host)
        self.delay = delay
        self.next_start = 0.0

    def push_back(self, seconds: float) -> None:
        self.next_start = max(self.next_start, time.monotonic() + seconds)

    async def __aenter__(self) -> HostGate:
        await self.slots.acquire()
        now = time.monotonic()
        start = max(now, self.next_start)
        self.next_start = start + self.delay
        if start > now:
            await asyncio.sleep(start - now)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.slots.release()


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class HttpClient:
    """Async GETs with retries, per-host gates and body caps. Use as an async context manager."""

    def __init__(
        self,
        *,
        concurrency: int,
        per_host: int,
        delay: float,
        timeout: float,
        max_bytes: int,
        user_agent: str,
        allow_private: bool,
        retries: int,
        backoff: float = 0.5,
        max_retry_after: float = 60.0,
        headers: dict[str, str] | None = None,
        seed: int | None = None,
    ):
        self.concurrency = concurrency
        self.per_host = per_host
        self.delay = delay
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.user_agent = user_agent
        self.allow_private = allow_private
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.headers = {"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate", **(headers or {})}
        self.random = random.Random(seed)
        self.gates: dict[str, HostGate] = {}
        self.session: aiohttp.ClientSession | None = None
        self.requests = 0

    async def __aenter__(self) -> HttpClient:
        connector = aiohttp.TCPConnector(
            limit=self.concurrency,
            limit_per_host=self.per_host,
            ttl_dns_cache=300,
            resolver=None if self.allow_private else PublicOnlyResolver(),
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers=self.headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            max_line_size=16384,
            max_field_size=16384,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def gate(self, host: str) -> HostGate:
        gate = self.gates.get(host)
        if gate is None:
            gate = self.gates[host] = HostGate(self.per_host, self.delay)
        return gate

    def set_host_delay(self, host: str, delay: float) -> None:
        gate = self.gate(host)
        gate.delay = max(gate.delay, delay)

    def backoff_seconds(self, attempt: int) -> float:
        # "full jitter": uniform in [0, base * 2^attempt], so retrying clients spread out
        return self.random.uniform(0, self.backoff * (2**attempt))

    async def get(
        self,
        url: str,
        accept: Callable[[str], bool] | None = None,
        params: dict[str, str] | None = None,
    ) -> Response:
        """GET url (no redirect following), retrying what is worth retrying.

        `accept(media_type)` decides whether a body is read; a refused type gives a row with
        the status and headers and the error "skipped content type".
        """
        try:
            check_url_address(url, self.allow_private)
        except UrlError as error:
            return Response(url, error=str(error), attempts=0)
        gate = self.gate(host_of(url))
        attempt = 0
        while True:
            async with gate:
                response, wait = await self._attempt(url, accept, params, attempt)
            response.attempts = attempt + 1
            retryable = wait is not None
            if not retryable or attempt >= self.retries:
                if retryable and response.error is None:
                    response.error = f"HTTP {response.status}"
                if retryable:
                    response.error = f"{response.error} (gave up after {attempt + 1} attempts)"
                return response
            if wait > 0:
                await asyncio.sleep(wait)
            attempt += 1

    async def _attempt(self, url, accept, params, attempt: int) -> tuple[Response, float | None]:
        """One request. Returns the response and, if worth retrying, the seconds to wait."""
        assert self.session is not None
        self.requests += 1
        try:
            async with self.session.get(url, allow_redirects=False, params=params) as resp:
                headers: dict[str, str] = {}
                for key, value in resp.headers.items():
                    headers[key] = f"{headers[key]}, {value}" if key in headers else value
                content_type = resp.headers.get("Content-Type")
                result = Response(url, status=resp.status, headers=headers, content_type=content_type)
                if resp.status in RETRY_STATUSES:
                    result.error = f"HTTP {resp.status}"
                    after = retry_after_seconds(headers.get("Retry-After"))
                    if after is not None:
                        if after > self.max_retry_after:
                            result.error += f" with Retry-After {after:.0f}s > max_retry_after"
                            return result, None
                        self.gate(host_of(url)).push_back(after)
                        return result, after
                    return result, self.backoff_seconds(attempt)
                if resp.status in REDIRECTS:
                    return result, None
                if accept is not None and not accept(media_type(content_type)):
                    result.error = f"skipped content type {media_type(content_type) or '(none)'}"
                    return result, None
                declared = resp.content_length
                if declared is not None and declared > self.max_bytes and "Content-Encoding" not in resp.headers:
                    result.error = f"body too large: Content-Length {declared} > max_bytes {self.max_bytes}"
                    return result, None
                chunks, size = [], 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > self.max_bytes:
                        result.error = f"body too large: over max_bytes {self.max_bytes} (decompressed)"
                        return result, None
                    chunks.append(chunk)
                result.body = b"".join(chunks)
                if resp.status >= 400:
                    result.error = f"HTTP {resp.status}"
                return result, None
        except TimeoutError:
            return Response(url, error=f"timeout after {self.timeout:g}s"), self.backoff_seconds(attempt)
        except aiohttp.ClientConnectorDNSError as error:
            if isinstance(error.os_error, RefusedAddress):
                return Response(url, error=str(error.os_error)), None
            return Response(url, error=f"dns error: {error.os_error}"), None
        except aiohttp.ClientConnectorError as error:
            return Response(url, error=f"connection error: {error.os_error}"), self.backoff_seconds(attempt)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError) as error:
            return Response(url, error=f"connection error: {type(error).__name__}: {error}"), self.backoff_seconds(attempt)
        except aiohttp.ClientResponseError as error:
            return Response(url, status=error.status, error=f"bad response: {error.message}"), None
        except aiohttp.ClientError as error:
            return Response(url, error=f"client error: {type(error).__name__}: {error}"), None
        except (ValueError, UnicodeError) as error:
            return Response(url, error=f"bad url or response: {error}"), None
