"""Topical labelled corpora built from what a Debian machine has offline, for tuning clustering.

- `debian`: every package's long description (`Description-en` of
  /var/lib/apt/lists/*_main_i18n_Translation-en.lz4; run
  `apt-get update -o Acquire::Languages=en` once to get it) labelled by the package's `Section`
  (from the matching `*_main_binary-*_Packages.lz4`). Identical descriptions are kept once.
  Sections that say what kind of package it is rather than its topic (libs, libdevel, oldlibs,
  doc, debug, metapackages, localization, introspection, misc) are left out; of the rest, every
  section with at least MIN_PER_LABEL descriptions is kept, each capped at CAP descriptions (a
  deterministic sample by hash), so no section dominates.
- `man`: the installed man pages (roff stripped) labelled by their manual section (1 commands,
  2 system calls, 3 library functions, 5 file formats, 7 overviews, 8 administration), sections
  with at least 150 pages, each capped at CAP.

Both are returned as Polars frames with `key`, `text`, `true_label`.
"""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path

import polars as pl

LISTS = Path("/var/lib/apt/lists")
NOT_TOPICS = {"libs", "libdevel", "oldlibs", "doc", "debug", "metapackages", "localization",
              "introspection", "misc"}
MIN_PER_LABEL = 300
CAP = 800


def _lz4_text(pattern: str) -> str:
    paths = sorted(glob.glob(str(LISTS / pattern)))
    if not paths:
        raise FileNotFoundError(
            f"no {pattern} under {LISTS}: run `apt-get update -o Acquire::Languages=en` first")
    return "".join(subprocess.run(["lz4", "-dc", p], capture_output=True, check=True, text=True).stdout
                   for p in paths)


def _stanzas(text: str) -> pl.Series:
    return pl.Series("stanza", text.split("\n\n"))


def _capped(frame: pl.DataFrame, min_per_label: int = MIN_PER_LABEL) -> pl.DataFrame:
    from pipeline.hashing import xxhash64

    counts = frame.group_by("true_label").len().filter(pl.col("len") >= min_per_label)
    return (frame.join(counts.select("true_label"), on="true_label")
            .with_columns(order=xxhash64(pl.col("key")))
            .sort("true_label", "order")
            .group_by("true_label", maintain_order=True).head(CAP)
            .drop("order").sort("key"))


def debian_descriptions() -> pl.DataFrame:
    translations = _stanzas(_lz4_text("*_main_i18n_Translation-en.lz4")).to_frame().select(
        package=pl.col("stanza").str.extract(r"(?m)^Package: (\S+)"),
        md5=pl.col("stanza").str.extract(r"(?m)^Description-md5: (\S+)"),
        text=pl.col("stanza").str.extract(r"(?ms)^Description-en: (.*)")
        .str.replace_all(r"(?m)^ \.$", "").str.replace_all(r"(?m)^ ", "").str.strip_chars(),
    ).drop_nulls()
    packages = _stanzas(_lz4_text("*_main_binary-*_Packages.lz4")).to_frame().select(
        package=pl.col("stanza").str.extract(r"(?m)^Package: (\S+)"),
        md5=pl.col("stanza").str.extract(r"(?m)^Description-md5: (\S+)"),
        true_label=pl.col("stanza").str.extract(r"(?m)^Section: (?:\S+/)?(\S+)"),
    ).drop_nulls().unique(["package", "md5"])
    frame = (translations.join(packages, on=["package", "md5"])
             .filter(~pl.col("true_label").is_in(sorted(NOT_TOPICS)))
             .unique("text", keep="first", maintain_order=True)
             .unique("md5", keep="first", maintain_order=True)
             .select(key=pl.col("package"), text="text", true_label="true_label"))
    return _capped(frame)


def man_pages() -> pl.DataFrame:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from make_corpus import man_pages as read_man_pages

    frame = read_man_pages(None).filter(pl.col("key").str.starts_with("man"))
    frame = frame.select(key="key", text="text", true_label="label").filter(
        pl.col("text").str.len_chars() > 200).unique("text", keep="first", maintain_order=True)
    return _capped(frame, min_per_label=150)


CORPORA = {"debian": debian_descriptions, "man": man_pages}

if __name__ == "__main__":
    for name, build in CORPORA.items():
        frame = build()
        print(name, frame.height, frame.group_by("true_label").len().sort("len", descending=True).rows())


def debian_all() -> pl.DataFrame:
    """Every topical section's descriptions, uncapped (imbalanced: the sizes as Debian has them)."""
    global CAP
    cap, CAP = CAP, 10**9
    try:
        return debian_descriptions()
    finally:
        CAP = cap


def wcxb_page_types() -> pl.DataFrame:
    """WCXB development pages' reference main content labelled by page type (7 types)."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "extraction" / "wcxb-dev"
    frame = pl.read_ndjson(shared / "ground-truth.jsonl")
    return frame.select(key=pl.col("id").cast(pl.String), text=pl.col("main_content"),
                        true_label=pl.col("page_type")).drop_nulls().filter(pl.col("text").str.len_chars() > 0)


CORPORA.update(debian_all=debian_all, wcxb=wcxb_page_types)


def debian_every_section() -> pl.DataFrame:
    """Like `debian`, with the package-kind sections (libs, doc, ...) kept as labels too."""
    global NOT_TOPICS
    kept, NOT_TOPICS = NOT_TOPICS, set()
    try:
        return debian_descriptions()
    finally:
        NOT_TOPICS = kept


CORPORA.update(debian_every=debian_every_section)
