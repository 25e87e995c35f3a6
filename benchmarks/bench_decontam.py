"""Benchmark: `pipeline decontaminate` against datatrove's n-gram decontamination, same inputs.

Train corpus (real text, ../shared/data): GSM8K train (question + answer), GPTeacher role-play
(instruction + input + output), the WCXB pages' main content and the SPDX licence texts, with
`--planted` GSM8K test questions pasted into train rows in disguise (upper case, doubled
spaces and line breaks, punctuation spaced out), the whole repeated `--copies` times (distinct
ids) and written as Parquet shards of 5,000 rows with a `split = "train"` column. Eval set:
GSM8K test, field `question`, 13-grams.

Both sides run as whole processes (interpreter start, imports, reading the input, building the
index, writing the output), alternating, `--repeats` times each, on one core each:
- ours: `python -m pipeline decontaminate --workers 0 --numbers zero` (in-process engine,
  POLARS_MAX_THREADS=1; numbers read as 0, the normalisation datatrove applies by default);
- datatrove: its documented two steps, `NGramsDecontIndexer` (index of the eval set's hashed
  13-grams) then `NGramsDecontFilter` in a `LocalPipelineExecutor` (1 task) between a
  `ParquetReader` and a `ParquetWriter`, with an exclusion writer. The indexer's `run` imports
  lighteval (pulling in torch) even for documents handed to it, so the child calls the indexer's
  own `compute_hashes` for every question and writes its index file the way `run` does; and
  datatrove hands `str` to xxhash, which xxhash >= 4 refuses, so the child encodes it first.
Wall and CPU seconds come from `getrusage(RUSAGE_CHILDREN)` around each child; MB/s per core
is train text MB over the child's CPU seconds. Both must find every planted row.

    .venv/bin/python benchmarks/bench_decontam.py [--copies 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.dataset import write_shard  # noqa: E402

DATA = REPO.parent / "shared" / "data"
GSM8K_TEST = DATA / "instruct" / "gsm8k_test.jsonl.gz"
SHARD_ROWS = 5000
NGRAM = 13


def read_jsonl(path: Path) -> pl.DataFrame:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return pl.DataFrame([json.loads(line) for line in handle if line.strip()])


def disguise(text: str, k: int) -> str:
    return [text.upper(), re.sub(" ", "  \n", text), text.replace(",", " , ").replace("?", " ?\n")][k % 3]


def build_corpus(folder: Path, copies: int, planted: int) -> tuple[float, set[str]]:
    """Train shards under folder/train/; returns (text MB, ids of the planted rows)."""
    gsm = read_jsonl(DATA / "instruct" / "gsm8k_train.jsonl.gz").select(
        pl.concat_str("question", "answer", separator="\n\n").alias("text"))
    with gzip.open(DATA / "instruct" / "gpteacher_roleplay.json.gz", "rt", encoding="utf-8") as handle:
        teacher = pl.DataFrame(json.load(handle)).select(
            pl.concat_str("instruction", "input", "output", separator="\n\n").alias("text"))
    pages = read_jsonl(DATA / "extraction" / "wcxb-dev" / "ground-truth.jsonl").select(
        pl.col("main_content").fill_null("").alias("text")).filter(pl.col("text") != "")
    licences = read_jsonl(DATA / "neardup" / "spdx_licenses.jsonl").select("text")
    base = pl.concat([gsm, teacher, pages, licences])
    questions = read_jsonl(GSM8K_TEST)["question"]
    parts, planted_ids = [], set()
    for copy in range(copies):
        part = base.with_columns(pl.format(f"c{copy}-{{}}", pl.int_range(pl.len())).alias("id"))
        # every copy gets its own planted questions, at fixed rows, prepended to the row's text
        chosen = [(copy * planted + k) % len(questions) for k in range(planted)]
        rows = [(k * 997 + copy * 31) % part.height for k in range(planted)]
        texts = part["text"].to_list()
        for k, (q, r) in enumerate(zip(chosen, rows, strict=True)):
            texts[r] = disguise(questions[q], k) + "\n\n" + texts[r]
            planted_ids.add(f"c{copy}-{r}")
        parts.append(part.with_columns(pl.Series("text", texts)))
    corpus = pl.concat(parts).select("id", "text", pl.lit("train").alias("split"))
    if folder.exists():
        shutil.rmtree(folder)
    for j, shard in enumerate(corpus.iter_slices(SHARD_ROWS)):
        write_shard(shard, folder, f"train/part-{j:05d}.parquet")
    return corpus["text"].str.len_bytes().sum() / 1e6, planted_ids


def run_ours(corpus: Path, out: Path) -> None:
    if out.parent.exists():
        shutil.rmtree(out.parent)
    subprocess.run([sys.executable, "-m", "pipeline", "decontaminate", "--input", str(corpus), "--output", str(out),
                    "--eval-set", f"gsm8k_test={GSM8K_TEST}@question", "--ngram", str(NGRAM), "--numbers", "zero", "--workers", "0",
                    "--no-own-splits"], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(REPO), "POLARS_MAX_THREADS": "1"})


def datatrove_child(corpus: Path, work: Path) -> None:
    """Runs in the child process: datatrove's indexer then its filter (see the module docstring)."""
    import datatrove.utils.hashes.xxhash as datatrove_xxhash
    import numpy as np
    import xxhash
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.decont import (
        NGramsDecontConfig,
        NGramsDecontFilter,
        NGramsDecontIndexer,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    # datatrove passes str to xxhash, which xxhash >= 4 refuses; encode as xxhash 3 did inside
    datatrove_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(data.encode() if isinstance(data, str) else data)
    config = NGramsDecontConfig(n_grams=NGRAM, find_query_ngrams=True, find_overlap_ngrams=False)
    index = work / "index"
    # PipelineStep.__new__ refuses to build the indexer without lighteval (used only by its run)
    indexer = object.__new__(NGramsDecontIndexer)
    indexer.__init__(str(index), config=config)
    hashes: set[int] = set()
    for question in read_jsonl(GSM8K_TEST)["question"]:
        hashes.update(indexer.compute_hashes(question))
    index.mkdir(parents=True, exist_ok=True)
    with open(index / "gsm8k_test.index.hashes", "wb") as handle:
        np.array(list(hashes), dtype=config.hash_config.np_descr).tofile(handle)
    LocalPipelineExecutor(pipeline=[
        ParquetReader(str(corpus / "train"), glob_pattern="*.parquet", text_key="text", id_key="id"),
        NGramsDecontFilter(str(index), config=config,
                           exclusion_writer=ParquetWriter(str(work / "removed"), output_filename="${rank}.parquet")),
        ParquetWriter(str(work / "kept"), output_filename="${rank}.parquet"),
    ], tasks=1, workers=1, logging_dir=str(work / "logs")).run()


def run_datatrove(corpus: Path, work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    subprocess.run([sys.executable, __file__, "--datatrove-child", str(corpus), str(work)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(fn, *args) -> tuple[float, float]:
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    fn(*args)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=1, help="times the real corpus is repeated")
    parser.add_argument("--planted", type=int, default=100, help="disguised GSM8K test questions per copy")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_decontam"))
    parser.add_argument("--datatrove-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.datatrove_child:
        datatrove_child(*args.datatrove_child)
        return
    if not (DATA / "README.md").exists():
        sys.exit(f"the shared data is missing: expected it at {DATA}")
    corpus = args.work / "splits"
    megabytes, planted = build_corpus(corpus, args.copies, args.planted)
    rows = sum(pl.scan_parquet(str(p)).select(pl.len()).collect().item() for p in corpus.rglob("*.parquet"))
    print(f"train: {rows:,} rows, {megabytes:.1f} MB of text, {len(planted)} planted rows; eval: GSM8K test "
          f"questions, {NGRAM}-grams; one core each (ours: --workers 0, POLARS_MAX_THREADS=1)")
    ours_out, theirs_out = args.work / "ours" / "decontaminated", args.work / "datatrove"
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "datatrove": []}
    for _ in range(args.repeats):  # alternating
        times["ours"].append(timed(run_ours, corpus, ours_out))
        times["datatrove"].append(timed(run_datatrove, corpus, theirs_out))
    found_ours = set(pl.read_parquet(args.work / "ours" / "rejected" / "decontaminated" / "**" / "*.parquet")["id"])
    found_theirs = set(pl.read_parquet(theirs_out / "removed" / "*.parquet")["id"])
    print(f"{'tool':<10} {'wall s (best)':>13} {'CPU s (best)':>12} {'MB/s per core':>14} {'rows found':>11} "
          f"{'planted found':>14}")
    best = {}
    for name, found in (("ours", found_ours), ("datatrove", found_theirs)):
        wall = min(w for w, _ in times[name])
        cpu = min(c for _, c in times[name])
        best[name] = (wall, cpu)
        print(f"{name:<10} {wall:>13.2f} {cpu:>12.2f} {megabytes / cpu:>14.2f} {len(found):>11,} "
              f"{len(found & planted):>7,}/{len(planted):,}")
    print(f"ratio datatrove/ours: wall {best['datatrove'][0] / best['ours'][0]:.1f}x, "
          f"CPU {best['datatrove'][1] / best['ours'][1]:.1f}x")
    print(f"all runs (wall, CPU): {json.dumps({k: [[round(w, 2), round(c, 2)] for w, c in v] for k, v in times.items()})}")
    only_ours, only_theirs = sorted(found_ours - found_theirs), sorted(found_theirs - found_ours)
    print(f"found by ours only: {len(only_ours)} {only_ours[:5]}; by datatrove only: {len(only_theirs)} "
          f"{only_theirs[:5]}")
    if not planted <= found_ours or not planted <= found_theirs:
        sys.exit("a tool missed planted rows")


if __name__ == "__main__":
    main()
