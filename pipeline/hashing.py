"""Stable, vectorised hashes as Polars expressions (polars-hash, Rust): ids and exact keys.

Polars' own `Expr.hash` may change between versions, so nothing stored on disk uses it.
These are the published algorithms (xxHash64, SHA-256) and give the same values everywhere.
"""

from __future__ import annotations

import polars as pl
from polars_hash import CryptographicHashingNameSpace, NonCryptographicHashingNameSpace


def _expr(column: str | pl.Expr) -> pl.Expr:
    return pl.col(column) if isinstance(column, str) else column


def xxhash64(column: str | pl.Expr) -> pl.Expr:
    """xxHash64 (seed 0) of a string column as UInt64; equals `xxhash.xxh64_intdigest`."""
    return NonCryptographicHashingNameSpace(_expr(column)).xxhash64()


def sha256_hex(column: str | pl.Expr) -> pl.Expr:
    """Lower-case hex SHA-256 of a string column."""
    return CryptographicHashingNameSpace(_expr(column)).sha2_256()


def doc_id(column: str | pl.Expr) -> pl.Expr:
    """The document id: the first 16 hex digits (64 bits) of SHA-256 of the source key."""
    return sha256_hex(column).str.slice(0, 16)
