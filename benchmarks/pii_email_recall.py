"""Recall of the e-mail masking on a real mail-like archive built offline from this machine.

The corpus: every line of /usr/share/doc (Debian changelogs' ` -- Name <address>  date`
trailers, upstream ChangeLogs, AUTHORS, copyright files, mailing-list style NEWS; gzipped or not)
that holds an address in angle brackets, `<local@host.tld>`. The brackets are the
ground truth: a structural parse, independent of the masking regex. An address counts as found
when, after `mask_pii(..., ["email"])`, the line no longer contains `@host` of that address.

    python benchmarks/pii_email_recall.py [--show 30]

Prints the lines, unique addresses, recall over both and the addresses that survive.
"""

from __future__ import annotations

import argparse
import gzip
import re
import time
from pathlib import Path

import polars as pl

from pipeline.clean.pii import mask_pii

BRACKETED = re.compile(r"<([^<>\s@]+@[^<>\s@]+\.[^<>\s@]+)>")
ROOTS = [Path("/usr/share/doc")]  # man pages are roff sources (`\\&.` inside addresses): not text


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile):
        return ""
    return data.decode("utf-8", "replace") if b"\0" not in data[:4096] else ""


def corpus() -> pl.DataFrame:
    lines: dict[str, None] = {}  # unique lines, in a stable order
    for root in ROOTS:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 4 << 20:
                for line in read_text(path).splitlines():
                    if "@" in line and BRACKETED.search(line):
                        lines.setdefault(line.strip())
    rows = [(line, address) for line in lines for address in BRACKETED.findall(line)]
    return pl.DataFrame(rows, schema=["text", "address"], orient="row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", type=int, default=30, help="surviving addresses listed")
    args = parser.parse_args()
    started = time.perf_counter()
    frame = corpus()
    masked = mask_pii(frame.lazy().with_row_index("row"), "text", ["email"]).collect()
    host = pl.col("address").str.extract(r"(@.*)$")
    judged = masked.with_columns(survived=pl.col("text").str.contains(host, literal=True))
    by_address = judged.group_by("address").agg(pl.col("survived").any())
    missed = by_address.filter("survived").sort("address")["address"].to_list()
    print(f"corpus: {judged['text'].n_unique():,} lines with {judged.height:,} bracketed addresses "
          f"({by_address.height:,} unique) from {', '.join(map(str, ROOTS))}")
    print(f"recall (occurrences): {1 - judged['survived'].mean():.5f}  "
          f"({judged['survived'].sum():,} of {judged.height:,} survive)")
    print(f"recall (unique addresses): {1 - len(missed) / by_address.height:.5f}  "
          f"({len(missed):,} of {by_address.height:,} survive)")
    for address in missed[: args.show]:
        print("  survived:", address)
    print(f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
