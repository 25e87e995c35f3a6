"""Benchmark the clean stage against the way most users write it and against datatrove.

Corpus: the real extraction ground truth in ../shared/data (WCXB main content, 1,495 pages of
7 types, and the ScrapingHub article bodies, 181), repeated --copies times.

1. Full clean (normalise + PII + all default rules): ours (Polars, one shard) vs pandas with
   per-row Python functions (`Series.apply`, as in the classic tutorials).
2. Gopher quality, Gopher repetition and C4 filters: ours (only those rules switched on) vs
   datatrove's GopherQualityFilter / GopherRepetitionFilter / C4QualityFilter (`.filter(doc)`
   per document, its default spaCy word tokenizer) vs the pandas per-row reference.
3. Agreement: for every rule on its own, ours keeps and drops exactly the rows the per-row
   reference (benchmarks/clean_reference.py) does; agreement with datatrove's filters is printed
   (they tokenise with spaCy, so a few borderline rows differ).
4. Memory: peak RSS of the stage run in a fresh process as the input grows (1x, 4x shards).

Run: .venv/bin/python benchmarks/bench_clean.py [--copies 1] [--skip-memory]
"""

from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import pandas as pd
import polars as pl
from clean_reference import c4_line_filter, failing_rules, first_failing_rule

from pipeline.clean import Options, clean_frame
from pipeline.clean.normalize import COMMENT_PATTERN, CONTROL_CHARS, TAG_PATTERN, mojibake_table
from pipeline.clean.pii import CARD, EMAIL, IBAN, IPV4, IPV6_FENCED, PHONE
from pipeline.clean.quality import RULES

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"

NO_RULES = dict(
    min_words=None, max_words=None, min_mean_word_length=None, max_mean_word_length=None,
    max_symbol_ratio=None, max_bullet_lines_ratio=None, max_ellipsis_lines_ratio=None,
    min_alpha_words_ratio=None, min_stop_words=None, max_top_2gram_char_ratio=None,
    max_top_3gram_char_ratio=None, max_top_4gram_char_ratio=None, max_dup_5gram_char_ratio=None,
    max_dup_6gram_char_ratio=None, max_dup_7gram_char_ratio=None, max_dup_8gram_char_ratio=None,
    max_dup_9gram_char_ratio=None, max_dup_10gram_char_ratio=None, drop_lorem_ipsum=False,
    min_sentences=None, min_punct_lines_ratio=None,
)
NO_PII = dict(mask_email=False, mask_iban=False, mask_credit_card=False, mask_ip=False, mask_phone=False)
NO_NORMALISE = dict(fix_control_chars=False, fix_mojibake=False, strip_markup=False, unescape_entities=False,
                    nfkc=False, remove_characters="", collapse_whitespace=False, max_blank_lines=-1)
GOPHER_QUALITY = dict(min_words=50, max_words=100_000, min_mean_word_length=3, max_mean_word_length=10,
                      max_symbol_ratio=0.1, max_bullet_lines_ratio=0.9, max_ellipsis_lines_ratio=0.3,
                      min_alpha_words_ratio=0.8, min_stop_words=2)
GOPHER_REPETITION = dict(max_dup_paragraph_ratio=0.3, max_dup_paragraph_char_ratio=0.2, max_dup_line_ratio=0.3,
                         max_dup_line_char_ratio=0.2, max_top_2gram_char_ratio=0.2,
                         max_top_3gram_char_ratio=0.18, max_top_4gram_char_ratio=0.16,
                         max_dup_5gram_char_ratio=0.15, max_dup_6gram_char_ratio=0.14, max_dup_7gram_char_ratio=0.13,
                         max_dup_8gram_char_ratio=0.12, max_dup_9gram_char_ratio=0.11, max_dup_10gram_char_ratio=0.10)
C4 = dict(c4_line_filter=True, drop_lorem_ipsum=True, drop_curly_bracket=True, min_sentences=5)


def load_corpus(copies: int) -> pl.DataFrame:
    rows = [json.loads(line) for line in (DATA / "extraction" / "wcxb-dev" / "ground-truth.jsonl").open()]
    texts = [r["main_content"] for r in rows if r.get("main_content")]
    truth = json.loads((DATA / "extraction" / "aeb" / "ground-truth.json").read_text())
    texts += [v["articleBody"] for v in truth.values() if v.get("articleBody")]
    texts = texts * copies
    return pl.DataFrame({"id": [str(i) for i in range(len(texts))], "text": texts})


# -- the pandas way: one Python function per document ------------------------------------
MOJIBAKE = mojibake_table()
MOJIBAKE_RE = re.compile("|".join(map(re.escape, sorted(MOJIBAKE, key=len, reverse=True))))
CONTROL_RE, COMMENT_RE, TAG_RE = re.compile(CONTROL_CHARS), re.compile(COMMENT_PATTERN), re.compile(TAG_PATTERN)


def normalise_py(text: str) -> str:
    text = re.sub(r"\r\n|[\r\x0b\x0c\x85\u2028\u2029]", "\n", text)
    text = MOJIBAKE_RE.sub(lambda m: MOJIBAKE[m.group(0)], text)
    text = CONTROL_RE.sub("", text)
    text = TAG_RE.sub(" ", COMMENT_RE.sub(" ", text))
    text = unicodedata.normalize("NFKC", html.unescape(text)).replace("\ufffd", "")
    text = re.sub(r"[ \t]+$", "", re.sub(r"[ \t]+\n", "\n", text))
    text = re.sub(r"(\S)[ \t]{2,}|(\S)\t", lambda m: (m.group(1) or m.group(2)) + " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def luhn(value: str) -> bool:
    digits = [int(c) for c in value if c.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (2 * d - 9 if 2 * d > 9 else 2 * d) for i, d in enumerate(digits))
    return 13 <= len(digits) <= 19 and total % 10 == 0


def iban_ok(value: str) -> bool:
    compact = value.replace(" ", "")
    digits = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return 15 <= len(compact) <= 34 and int(digits) % 97 == 1


def py_regex(pattern: str) -> re.Pattern:
    """The stage's Rust pattern for Python's re (which has no `(?-u:...)` ASCII boundary)."""
    return re.compile(pattern.replace("(?-u:\\b)", "\\b"))


PY_PII = [
    (py_regex(EMAIL), lambda m: "<EMAIL>"),
    (py_regex(IBAN), lambda m: "<IBAN>" if iban_ok(m.group(0)) else m.group(0)),
    (py_regex(CARD), lambda m: "<CREDIT_CARD>" if luhn(m.group(0)) else m.group(0)),
    (re.compile(IPV6_FENCED), lambda m: m.group(1) + ("<IP_ADDRESS>" if re.search(r"\d", m.group(2)) and m.group(2).count(":") >= 2 else m.group(2)) + m.group(3)),
    (re.compile(IPV4), lambda m: m.group(1) + "<IP_ADDRESS>" + m.group(3)),
    (re.compile(PHONE), lambda m: m.group(1) + "<PHONE>" + m.group(3)),
]


def mask_py(text: str) -> str:
    for pattern, repl in PY_PII:
        text = pattern.sub(repl, text)
    return text


def pandas_full(frame: pd.DataFrame, options: Options) -> pd.DataFrame:
    frame = frame.copy()
    frame["text"] = frame["text"].apply(normalise_py).apply(mask_py)
    frame["reason"] = frame["text"].apply(lambda t: first_failing_rule(t, options))
    return frame


def pandas_rules(frame: pd.DataFrame, options: Options) -> list:
    texts = frame["text"].apply(c4_line_filter) if options.c4_line_filter else frame["text"]
    reasons = texts.apply(lambda t: first_failing_rule(t, options))
    return [None if pd.isna(r) else r for r in reasons.tolist()]


# -- ours -----------------------------------------------------------------------------------
def ours(frame: pl.DataFrame, options: Options) -> pl.DataFrame:
    return clean_frame(frame.lazy(), options).collect(engine="streaming")


# -- datatrove ------------------------------------------------------------------------------
def datatrove_filter(kind: str, texts: list[str]) -> list[bool]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    block = {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
             "c4": C4QualityFilter}[kind]()
    kept = []
    for i, text in enumerate(texts):
        result = block.filter(Document(text=text, id=str(i)))
        kept.append(result is True)
    return kept


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def row(name: str, seconds: float, docs: int, mb: float) -> dict:
    return {"impl": name, "seconds": round(seconds, 2), "docs/s": round(docs / seconds), "MB/s": round(mb / seconds, 2)}


def memory_run(root: str, out: str) -> None:
    """Child process: run the stage over the shards in `root`, print its peak RSS (MiB)."""
    import resource

    from pipeline.clean import run
    from pipeline.engine import Engine

    result = run([Path(root)], Path(out), Options(), Engine(workers=0, progress=False))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows_in": result.rows_in, "rows_out": result.rows_out, "peak_rss_mib": round(peak)}))


def memory_table(corpus: pl.DataFrame, sizes=(1, 4, 8)) -> None:
    from pipeline.dataset import write_shard

    print("\nmemory as the input grows (fresh process per size, in-process engine, one shard = one corpus copy):")
    for shards in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(shards):
                write_shard(corpus.with_columns(pl.col("id") + f"-{i}"), Path(tmp) / "docs", f"part-{i:03d}.parquet")
            mb = shards * corpus["text"].str.len_bytes().sum() / 1e6
            done = subprocess.run([sys.executable, __file__, "--memory-child", str(Path(tmp) / "docs"), str(Path(tmp) / "clean")],
                                  capture_output=True, text=True, check=True)
            print(f"  {shards} shard(s), {mb:6.1f} MB of text: {done.stdout.strip().splitlines()[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--only-memory", action="store_true")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_run(*args.memory_child)
        return

    if args.only_memory:
        memory_table(load_corpus(1))
        return
    corpus = load_corpus(args.copies)
    docs, mb = corpus.height, corpus["text"].str.len_bytes().sum() / 1e6
    print(f"corpus: {docs} real documents, {mb:.1f} MB (WCXB + ScrapingHub ground truth x{args.copies})\n")
    pdf = corpus.to_pandas()
    results = []

    # 1. full clean
    defaults = Options()
    full, t_ours = timed(ours, corpus, defaults)
    full_pd, t_pd = timed(pandas_full, pdf, defaults)
    results.append(("full clean (normalise + PII + default rules)", [row("ours (Polars)", t_ours, docs, mb), row("pandas per-row", t_pd, docs, mb)]))
    same_text = sum(a == b for a, b in zip(full["text"].to_list(), full_pd["text"].tolist(), strict=True)) / docs
    pd_reasons = [None if pd.isna(r) else r for r in full_pd["reason"].tolist()]
    same_reason = sum(a == b for a, b in zip(full["reason"].to_list(), pd_reasons, strict=True)) / docs

    # 2. rule families on normalised text (both sides read the same text)
    normalised = ours(corpus, Options(**NO_PII, **NO_RULES)).select("id", "text")
    texts = normalised["text"].to_list()
    npdf = normalised.to_pandas()
    agreement = {}
    for family, rules in [("gopher_quality", GOPHER_QUALITY), ("gopher_repetition", GOPHER_REPETITION), ("c4", C4)]:
        options = Options(**{**NO_RULES, **NO_PII, **NO_NORMALISE, **rules})
        ours_rows, t_o = timed(ours, normalised, options)
        pd_rows, t_p = timed(pandas_rules, npdf, options)
        dt_kept, t_d = timed(datatrove_filter, family, texts)
        ours_kept = ours_rows["reason"].is_null().to_list()
        agreement[family] = {
            "pandas reference": sum(a == b for a, b in zip(ours_rows["reason"].to_list(), pd_rows, strict=True)) / docs,
            "datatrove": sum(a == b for a, b in zip(ours_kept, dt_kept, strict=True)) / docs,
            "kept ours/datatrove": (sum(ours_kept), sum(dt_kept)),
        }
        results.append((f"{family} filter", [row("ours (Polars)", t_o, docs, mb), row("pandas per-row", t_p, docs, mb),
                                             row("datatrove", t_d, docs, mb)]))

    # 3. every rule on its own, against the reference
    strict = Options(**NO_PII, **NO_NORMALISE, **GOPHER_QUALITY, **GOPHER_REPETITION, **{**C4, "c4_line_filter": False},
                     min_punct_lines_ratio=0.12, max_short_lines_ratio=0.67, max_dup_line_chars_fineweb=0.01,
                     max_newline_ratio=0.3)
    fails = [r.fails(strict).fill_null(False).alias(r.name) for r in RULES if r.fails(strict) is not None]
    ours_all = clean_frame(normalised.lazy(), strict).with_columns(fails).collect()
    reference = [failing_rules(t, strict) for t in texts]
    per_rule = {}
    for r in RULES:
        if r.name in ours_all.columns:
            mine = ours_all[r.name].to_list()
            per_rule[r.name] = (sum(mine), sum(a == (r.name in ref) for a, ref in zip(mine, reference, strict=True)) == docs)

    print(f"{'task':<48} {'implementation':<16} {'seconds':>8} {'docs/s':>9} {'MB/s':>7} {'ours is':>10}")
    for task, rows in results:
        base = rows[0]["seconds"]
        for r in rows:
            speed = "" if r is rows[0] else f"{r['seconds'] / base:.1f}x faster"
            print(f"{task:<48} {r['impl']:<16} {r['seconds']:>8} {r['docs/s']:>9} {r['MB/s']:>7} {speed:>10}")
    print(f"\nfull clean vs pandas per-row: same cleaned text {same_text:.2%} of rows, same keep/drop reason {same_reason:.2%}")
    for family, a in agreement.items():
        print(f"{family:<18} same reason as the pandas reference: {a['pandas reference']:.2%}; "
              f"same keep/drop as datatrove: {a['datatrove']:.2%} (kept ours {a['kept ours/datatrove'][0]}, datatrove {a['kept ours/datatrove'][1]})")
    print("\nevery rule alone vs the per-row reference (rows it drops, identical?):")
    for name, (dropped, same) in per_rule.items():
        print(f"  {name:<30} drops {dropped:>5}  {'identical' if same else 'DIFFERENT'}")
    if not all(same for _, same in per_rule.values()):
        sys.exit("a rule disagrees with its reference")

    if not args.skip_memory:
        memory_table(load_corpus(1))


if __name__ == "__main__":
    main()
