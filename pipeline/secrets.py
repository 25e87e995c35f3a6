"""Secrets in options: API headers and params, database passwords. Never written down.

A value is a secret by where it sits: a header or query parameter whose name says so
(`Authorization`, `Cookie`, `X-Api-Key`, `api_key`, `access_token`, `password`, ...), the
password of a URL (`postgresql://user:PASSWORD@host/db`), or any option named like one. Such
values become `***` wherever options are written or echoed (manifests, `_job.json`, the
report, error messages); `fingerprint_with_secrets` keeps a slow, salted hash of them in the
fingerprint instead, so a changed token still re-runs the stage without showing the token.

A job file need not hold a secret at all: a value `"env:NAME"` is read from the environment
variable NAME when the source runs (`headers = {Authorization = "env:API_TOKEN"}`,
`dsn = "env:PG_DSN"`); the manifest then shows `env:NAME`, which is not secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

MASK = "***"
ENV_PREFIX = "env:"

# name parts that make a header, parameter or option a secret (`X-Api-Key` → x, api, key)
_SECRET_PARTS = frozenset({
    "key", "apikey", "token", "secret", "password", "passwd", "pwd", "pass", "passphrase", "auth",
    "authorization", "cookie", "session", "sessionid", "sid", "signature", "sig", "credential",
    "credentials", "jwt", "bearer", "otp", "private",
})
_SECRET_WORDS = ("token", "secret", "password", "passwd", "apikey", "authoriz", "cookie", "credential")
# option names that hold where a secret is, not the secret itself
_NOT_SECRET_SUFFIXES = ("_file", "_path", "_field", "_param", "_column", "_env")
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)(?P<secret>[^@\s/]+)(?=@)")
_QUERY_PAIR = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s]*)")
# key=value pairs of a libpq keyword DSN ("host=h password=x") and of dicts in messages
_KEYWORD_PAIR = re.compile(
    r"""(?P<head>\b(?P<name>[A-Za-z][\w\-]*)['"]?\s*[=:]\s*)"""
    r"""(?P<value>'[^']*'|"[^"]*"|(?:(?i:bearer|basic|digest|token)\s+)?[^'"\s,&;}]+)""")


def is_secret_name(name: str) -> bool:
    """True for a header, parameter or option name that holds a credential."""
    lowered = name.lower()
    if lowered.endswith(_NOT_SECRET_SUFFIXES):
        return False
    parts = set(re.split(r"[^a-z0-9]+", lowered))
    return bool(parts & _SECRET_PARTS) or any(word in lowered for word in _SECRET_WORDS)


def is_env_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(ENV_PREFIX) and len(value) > len(ENV_PREFIX)


def resolve(value: str, where: str) -> str:
    """VALUE, or the environment variable it names (`env:NAME`); WHERE names the option in errors."""
    if not is_env_reference(value):
        return value
    name = value[len(ENV_PREFIX):]
    found = os.environ.get(name)
    if found is None:
        from pipeline.errors import JobError

        raise JobError(f"{where} = {value!r}: environment variable {name} is not set")
    return found


def resolve_mapping(values: dict[str, str], where: str) -> dict[str, str]:
    return {key: resolve(value, f"{where}.{key}") for key, value in values.items()}


def redact_text(text: str) -> str:
    """TEXT with URL passwords and secret-named query/keyword values replaced by `***`."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    text = _QUERY_PAIR.sub(lambda m: m["head"] + MASK if is_secret_name(m["name"]) and m["value"] else m[0], text)
    return _KEYWORD_PAIR.sub(_mask_keyword_value, text)


def _mask_keyword_value(match: re.Match) -> str:
    value = match["value"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    bare = value.strip("'\"")
    if not is_secret_name(match["name"]) or not bare or bare == MASK or is_env_reference(bare):
        return match[0]
    return f"{match['head']}{quote}{MASK}{quote}"


def redact(value: Any, name: str = "", found: list[tuple[str, str]] | None = None) -> Any:
    """VALUE (options as JSON-like data) with every secret replaced by `***`; the secrets
    found are appended to FOUND as (path, value)."""
    if isinstance(value, dict):
        return {key: redact(item, f"{name}.{key}" if name else str(key), found) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item, f"{name}[{i}]", found) for i, item in enumerate(value)]
    if not isinstance(value, str) or not value or is_env_reference(value):
        return value
    if is_secret_name(name.rsplit(".", 1)[-1]):
        if found is not None:
            found.append((name, value))
        return MASK
    cleaned = redact_text(value)
    if cleaned != value and found is not None:
        found.append((name, value))
    return cleaned


def secrets_digest(secrets: list[tuple[str, str]]) -> str:
    """A slow salted hash (scrypt) of the secrets: it changes when one does, and guessing a
    password from it costs tens of milliseconds a guess."""
    data = json.dumps(sorted(secrets), ensure_ascii=False).encode()
    return "scrypt:" + hashlib.scrypt(data, salt=b"pipeline options secrets", n=1 << 14, r=8, p=1, dklen=16).hex()


def fingerprint_with_secrets(options: dict[str, Any]) -> dict[str, Any]:
    """OPTIONS redacted, plus `secrets_digest` over their secrets (those read from `env:` too),
    so the fingerprint follows a changed token while the manifest shows `***`."""
    found: list[tuple[str, str]] = []
    redacted = redact(options, "", found)
    _collect_env(options, "", found)
    if found:
        redacted["secrets_digest"] = secrets_digest(found)
    return redacted


def _collect_env(value: Any, name: str, found: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _collect_env(item, f"{name}.{key}", found)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _collect_env(item, f"{name}[{i}]", found)
    elif is_env_reference(value) and value[len(ENV_PREFIX):] in os.environ:
        found.append((name, os.environ[value[len(ENV_PREFIX):]]))


def secret_values(values: dict[str, str], where: str) -> list[str]:
    """The resolved values of VALUES (the `where` option: headers or params) that are secrets:
    secret-named ones and those read from the environment."""
    return [resolve(value, f"{where}.{key}") for key, value in values.items()
            if is_secret_name(key) or is_env_reference(value)]


def scrub(text: str, secrets: list[str]) -> str:
    """TEXT (an error message from a server or library) with the given secret values, and
    anything `redact_text` recognises, replaced by `***`."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return redact_text(text)
