"""PII masking as Polars expressions: e-mail, IBAN, credit card, IPv6, IPv4 and phone numbers.

Kinds are masked in that fixed order (an e-mail's digits are gone before the phone pattern
looks). Patterns that a checksum or shape can confirm are validated on the candidate, still
vectorised: the text is split around candidates (`str.split` by regex, inclusive), each
candidate is checked with a pure expression (Luhn for cards, ISO 13616 mod-97 for IBANs, a
digit and two colons for IPv6) inside `list.eval`, and the pieces are joined again; only the
rows that hold a candidate go through this (a batch function gathers and scatters them back).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import polars as pl

# `(?-u:\b)` is an ASCII word boundary: these kinds are ASCII, and a Unicode \b keeps the regex
# engine off its fast path on non-ASCII text (10x slower on real pages)
MARK = "\ue000"  # private-use character: fences candidates while a text is split and rejoined
CANDIDATE = "\ue001"  # private-use character: starts a candidate piece

# E-mail: what a mail client would deliver to, not only RFC 5322's dot-atom: a local part may
# hold consecutive or trailing dots (`chris.doelle.@...`) and brackets (`app[bot]@...`), a host
# label underscores (`Foghorn_Leghorn.coe.northeastern.edu`), and underscores may trail the
# TLD (`jjmartti@utu.fi__`, as archives print it); masked with the address.
# RFC 5321 also allows a quoted local part (`"john doe"@example.com`) and an address literal for
# the host (`postmaster@[192.0.2.1]`, `root@[IPv6:2001:db8::1]`): masked whole as well.
_EMAIL_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"  # RFC 5322 atext, the hyphen escaped inside a class
EMAIL = (
    rf"(?:\"[^\"\r\n@]{{1,64}}\"|[{_EMAIL_ATEXT}][{_EMAIL_ATEXT}.\[\]]*)@"
    r"(?:(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)+"
    r"(?:xn--[A-Za-z0-9-]{1,59}|[A-Za-z]{2,24})_*(?-u:\b)"
    r"|\[(?:IPv6:[0-9A-Fa-f:.]{2,45}|\d{1,3}(?:\.\d{1,3}){3})\])"
)
IBAN = r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?-u:\b)"
# Visa, Mastercard, Amex, Discover, JCB, Diners: 13-19 digits, optionally in groups
CARD = r"(?-u:\b)(?:4\d{3}|5[1-5]\d{2}|2[2-7]\d{2}|3[47]\d{2}|3[068]\d{2}|6(?:011|5\d{2})|35\d{2})(?:\d{9,15}|(?:[ -]\d{4}){3}|[ -]\d{6}[ -]\d{5})(?-u:\b)"
_H = "[0-9A-Fa-f]{1,4}"
IPV6 = (
    r"(?:(?:" + _H + r":){7}" + _H
    + r"|(?:" + _H + r":){1,7}:(?:" + _H + r")?"
    + r"|(?:" + _H + r":){1,6}(?::" + _H + r"){1,6}"
    + r"|::(?:" + _H + r":){0,6}" + _H + r")(?:%[0-9A-Za-z]+)?"
)
IPV6_FENCED = r"(^|[^0-9A-Za-z:.])(" + IPV6 + r")([^0-9A-Za-z:]|$)"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = r"(^|[^\w.])(" + _OCTET + r"(?:\." + _OCTET + r"){3})($|[^\w.]|\.(?:\s|$))"
# international (+CC ...), North American (3-3-4 with separators) and trunk-prefixed national
# numbers (0 + 2-4 digits, then two groups, or 0 + 9-10 digits). Dates (2024-01-15), versions (3.11.4), ISBNs
# (978-3-16-148410-0) and long digit runs do not have these shapes.
PHONE = (
    r"(^|[^\w.+/-])("
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
    r"|\+\d{10,14}"
    r"|0\d{9,10}"
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}"
    r"|\d{3}[ .-]\d{3}[ .-]\d{4}"
    r"|0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}"
    r")($|[^\w/-]|[.-](?:\s|$))"
)


@dataclass(frozen=True)
class PiiKind:
    name: str
    placeholder: str
    pattern: str  # what a candidate looks like (Rust regex, no look-around)
    valid: Callable[[pl.Expr], pl.Expr] | None = None  # checks a candidate string expression
    groups: bool = False  # pattern has (prefix)(value)(suffix) groups: replace keeps the fences


def _digit(s: pl.Expr, i: int) -> pl.Expr:
    return s.str.slice(i, 1).cast(pl.Int32, strict=False).fill_null(0)


def _luhn_sum(digits: pl.Expr) -> pl.Expr:
    terms = []
    for i in range(19):
        d = _digit(digits, i)
        terms.append(d if i % 2 == 0 else pl.when(d * 2 > 9).then(d * 2 - 9).otherwise(d * 2))
    return pl.sum_horizontal(terms)


def is_luhn_valid(candidate: pl.Expr) -> pl.Expr:
    """Luhn checksum over the digits of `candidate` (spaces and hyphens ignored)."""
    digits = candidate.str.replace_all(r"\D", "").str.reverse()
    return (_luhn_sum(digits) % 10 == 0) & digits.str.len_chars().is_between(13, 19)


_LETTER_VALUES = {chr(c): str(c - 55) for c in range(ord("A"), ord("Z") + 1)}


def is_iban_valid(candidate: pl.Expr) -> pl.Expr:
    """ISO 13616 check: move the first four characters to the end, letters → 10..35, mod 97 == 1."""
    compact = candidate.str.replace_all(" ", "")
    rotated = compact.str.slice(4) + compact.str.slice(0, 4)
    digits = rotated
    for letter, value in _LETTER_VALUES.items():  # literal replaces: no automaton per list
        digits = digits.str.replace_all(letter, value, literal=True)
    # leading zeros keep the value; 70 digits = 10 chunks of 7, each step fits in int64
    padded = digits.str.zfill(70)
    remainder = pl.lit(0, pl.Int64)
    for start in range(0, 70, 7):
        chunk = padded.str.slice(start, 7).cast(pl.Int64, strict=False).fill_null(0)
        remainder = (remainder * 10_000_000 + chunk) % 97
    return (remainder == 1) & compact.str.len_chars().is_between(15, 34)


def is_ipv6_valid(candidate: pl.Expr) -> pl.Expr:
    """A real address has a digit and at least two colons (`add::` or `dead:beef` do not)."""
    return candidate.str.contains(r"\d") & (candidate.str.count_matches(":", literal=True) >= 2)


KINDS: dict[str, PiiKind] = {
    k.name: k
    for k in [
        PiiKind("email", "<EMAIL>", EMAIL),
        PiiKind("iban", "<IBAN>", IBAN, is_iban_valid),
        PiiKind("credit_card", "<CREDIT_CARD>", CARD, is_luhn_valid),
        PiiKind("ipv6", "<IP_ADDRESS>", IPV6_FENCED, is_ipv6_valid, groups=True),
        PiiKind("ipv4", "<IP_ADDRESS>", IPV4, groups=True),
        PiiKind("phone", "<PHONE>", PHONE, groups=True),
    ]
}


def _validated_expr(text: pl.Expr, kind: PiiKind) -> tuple[pl.Expr, pl.Expr]:
    """(masked text, count) for a kind whose candidates are checked one by one."""
    # a candidate piece starts with CANDIDATE, so every step below is elementwise: Polars
    # evaluates it once over all pieces of all rows instead of once per row
    fence = f"${{1}}{MARK}{CANDIDATE}${{2}}{MARK}${{3}}" if kind.groups else f"{MARK}{CANDIDATE}$0{MARK}"
    pieces = text.str.replace_all(kind.pattern, fence).str.split(MARK)
    e = pl.element()
    is_candidate = e.str.starts_with(CANDIDATE)
    value = e.str.strip_prefix(CANDIDATE)
    # the checks run on candidates only: the text between them is blanked for the check
    hit = is_candidate & kind.valid(pl.when(is_candidate).then(value).otherwise(pl.lit("")))
    masked = pieces.list.eval(pl.when(hit).then(pl.lit(kind.placeholder)).otherwise(value)).list.join("")
    count = pieces.list.eval(hit).list.sum().cast(pl.Int64)
    return masked, count


def _validated_batch(texts: pl.Series, kind: PiiKind) -> pl.Series:
    """Split-check-join only the rows that hold a candidate (a `when/then` would still
    evaluate the split for every row); the others are returned as they are, count 0."""
    count = pl.zeros(len(texts), pl.Int64, eager=True)
    has = texts.str.contains(kind.pattern).fill_null(False)
    if has.any():
        rows = has.arg_true()
        masked, found = _validated_expr(pl.col("t"), kind)
        sub = pl.DataFrame({"t": texts.gather(rows)}).select(masked.alias("t"), found.alias("n"))
        texts, count = texts.scatter(rows, sub["t"]), count.scatter(rows, sub["n"])
    return pl.DataFrame({"text": texts, "count": count}).to_struct(texts.name)


def _validated(text: pl.Expr, kind: PiiKind) -> pl.Expr:
    """A struct (text, count) for a kind whose candidates are checked one by one."""
    dtype = pl.Struct({"text": pl.String, "count": pl.Int64})
    return text.map_batches(partial(_validated_batch, kind=kind), return_dtype=dtype, is_elementwise=True)


def mask_kind(text: pl.Expr, kind: PiiKind) -> tuple[pl.Expr, pl.Expr]:
    """(text with this kind masked, number of values masked per row)."""
    if kind.valid is not None:
        both = _validated(text, kind)
        return both.struct.field("text"), both.struct.field("count")
    if not kind.groups:
        return text.str.replace_all(kind.pattern, kind.placeholder), text.str.count_matches(kind.pattern)
    # the fence characters around a value are consumed by its match, so two values separated
    # by one character ("1.2.3.4,5.6.7.8") need a second pass
    replace = f"${{1}}{kind.placeholder}${{3}}"
    first = text.str.replace_all(kind.pattern, replace)
    count = text.str.count_matches(kind.pattern) + first.str.count_matches(kind.pattern)
    return first.str.replace_all(kind.pattern, replace), count.cast(pl.Int64)


def mask_pii(frame: pl.LazyFrame, column: str, kinds: list[str], prefix: str = "pii_") -> pl.LazyFrame:
    """Mask the given kinds in `column`, in the fixed order of KINDS, adding a per-row count
    column `<prefix><kind>` for each. One `with_columns` per kind keeps the plan linear."""
    for name, kind in KINDS.items():
        if name in kinds and kind.valid is not None:  # one evaluation, then its two fields
            both = _validated(pl.col(column), kind).alias("_pii")
            frame = frame.with_columns(both).with_columns(
                pl.col("_pii").struct.field("text").alias(column), pl.col("_pii").struct.field("count").alias(prefix + name)).drop("_pii")
        elif name in kinds:
            masked, count = mask_kind(pl.col(column), kind)
            frame = frame.with_columns(masked.alias(column), count.fill_null(0).alias(prefix + name))
    return frame
