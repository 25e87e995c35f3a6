"""Tokenization benchmark: `pipeline tokens` against a plain `tokenizers` encode_batch loop and
HF `datasets.map(batched=True)`, same tokenizer (GPT-2, bundled), same real text, whole processes.

Corpus: the real instruction records in ../shared/data/instruct (GSM8K train and test, GPTeacher
role-play), rendered as prompt + blank line + response, repeated `--repeat` times with fresh ids,
in Parquet shards of 20,000 rows; plus, with `--man`, the machine's man pages as long documents.
Each side is one child process timed from the outside (interpreter start, imports, reading the
input, tokenizing, writing a Parquet file with `n_tokens`): wall seconds and the child's CPU
seconds (user + system, from wait4). Sides alternate within each round; the best of the rounds is
compared. Every side's counts are checked equal to ours.

- ours: `python -m pipeline tokens --tokenizer gpt2 --workers 0` (in-process engine) and, with
  `--dask`, the default local Dask cluster;
All three load the same tokenizer.json (the bundled GPT-2 written out once; `Tokenizer.from_file`).
- tokenizers: read the shards with pyarrow, `Tokenizer.encode_batch_fast` in batches of 1,000
  (the documented fast path: Rust, parallel over the batch), write the counts;
- datasets: `load_dataset("parquet")`, `.map(batched=True)` calling the same tokenizer's
  `encode_batch_fast`, `.to_parquet`.

    .venv/bin/python benchmarks/bench_tokens.py               # 3 rounds, corpus x4
    .venv/bin/python benchmarks/bench_tokens.py --rounds 1 --repeat 1
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.tokens import tokenizer_json  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data" / "instruct"
SHARD_ROWS = 20_000

TOKENIZERS_CHILD = """
import sys, glob
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from tokenizers import Tokenizer
tokenizer = Tokenizer.from_file(sys.argv[3])
for path in sorted(glob.glob(sys.argv[1] + "/*.parquet")):
    table = pq.read_table(path)
    texts = table["text"].to_pylist()
    counts = np.zeros(len(texts), np.uint32)
    for start in range(0, len(texts), 1000):
        encodings = tokenizer.encode_batch_fast(texts[start:start + 1000], add_special_tokens=False)
        counts[start:start + len(encodings)] = [len(e) for e in encodings]
    pq.write_table(table.append_column("n_tokens", pa.array(counts)), sys.argv[2] + "/" + path.rsplit("/", 1)[1])
"""

DATASETS_CHILD = """
import sys, os
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import datasets
from tokenizers import Tokenizer
datasets.disable_progress_bars()
tokenizer = Tokenizer.from_file(sys.argv[3])
data = datasets.load_dataset("parquet", data_files=sys.argv[1] + "/*.parquet", split="train",
                             cache_dir=sys.argv[2] + "/cache")
def count(batch):
    return {"n_tokens": [len(e) for e in tokenizer.encode_batch_fast(batch["text"], add_special_tokens=False)]}
data.map(count, batched=True, batch_size=1000).to_parquet(sys.argv[2] + "/counted.parquet")
"""


def instruct_texts() -> list[str]:
    texts = []
    for name in ("gsm8k_train.jsonl.gz", "gsm8k_test.jsonl.gz"):
        with gzip.open(DATA / name, "rt", encoding="utf-8") as handle:
            texts += [f"{r['question']}\n\n{r['answer']}" for r in map(json.loads, handle)]
    with gzip.open(DATA / "gpteacher_roleplay.json.gz", "rt", encoding="utf-8") as handle:
        for r in json.load(handle):
            prompt = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
            texts.append(f"{prompt}\n\n{r['output']}")
    return texts


def man_texts(limit: int) -> list[str]:
    pages = sorted(Path("/usr/share/man/man1").glob("*.gz"))[:limit]
    out = []
    for page in pages:
        try:
            out.append(gzip.decompress(page.read_bytes()).decode("utf-8", errors="replace"))
        except OSError:
            continue
    return out


def write_corpus(folder: Path, texts: list[str], repeat: int) -> tuple[int, int]:
    frame = pl.DataFrame({"text": texts})
    frame = pl.concat([frame] * repeat).with_columns(pl.format("r{}", pl.int_range(pl.len())).alias("id"))
    folder.mkdir(parents=True)
    for index, start in enumerate(range(0, frame.height, SHARD_ROWS)):
        frame.slice(start, SHARD_ROWS).write_parquet(folder / f"part-{index:05d}.parquet")
    return frame.height, int(frame["text"].str.len_bytes().sum())


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one child process, timed from outside."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:4]} failed: {process.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def counts_of(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(folder / "**" / "*.parquet").select("id", "n_tokens").sort("id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=4, help="copies of the instruction corpus")
    parser.add_argument("--man", type=int, default=0, help="add this many man pages (long documents)")
    parser.add_argument("--dask", action="store_true", help="also time ours on the default local Dask cluster")
    args = parser.parse_args()
    texts = instruct_texts() + man_texts(args.man)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as tmp:
        tmp = Path(tmp)
        rows, nbytes = write_corpus(tmp / "corpus", texts, args.repeat)
        # every side loads the same tokenizer.json (the bundled GPT-2, written out once)
        tokenizer_file = tmp / "tokenizer.json"
        tokenizer_file.write_text(tokenizer_json("gpt2"))
        print(f"corpus: {rows:,} records, {nbytes / 1e6:.1f} MB of text, {len(list((tmp / 'corpus').glob('*.parquet')))} shards; "
              f"{os.cpu_count()} cores (shared with other work while measured)")
        sides = {
            "pipeline tokens (workers=0)": lambda out: [python, "-m", "pipeline", "tokens", "--input", str(tmp / "corpus"),
                                                       "--output", str(out), "--tokenizer", str(tokenizer_file), "--workers", "0"],
            "tokenizers encode_batch": lambda out: [python, "-c", TOKENIZERS_CHILD, str(tmp / "corpus"), str(out), str(tokenizer_file)],
            "datasets.map(batched)": lambda out: [python, "-c", DATASETS_CHILD, str(tmp / "corpus"), str(out), str(tokenizer_file)],
        }
        if args.dask:
            sides["pipeline tokens (dask, 2 workers)"] = lambda out: [
                python, "-m", "pipeline", "tokens", "--input", str(tmp / "corpus"), "--output", str(out),
                "--tokenizer", str(tokenizer_file), "--workers", "2"]
        best: dict[str, tuple[float, float]] = {}
        reference = None
        for round_index in range(args.rounds):
            order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
            for name in order:
                out = tmp / f"out-{round_index}-{abs(hash(name))}"
                if not name.startswith("pipeline"):
                    out.mkdir()
                wall, cpu = timed(sides[name](out), env)
                counts = counts_of(out)
                if reference is None:
                    reference = counts
                assert counts["n_tokens"].cast(pl.Int64).to_list() == reference["n_tokens"].cast(pl.Int64).to_list(), name
                print(f"  round {round_index + 1}: {name:<34} {wall:7.2f} s wall {cpu:7.2f} s CPU")
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu)
        ours = best["pipeline tokens (workers=0)"]
        print(f"\nbest of {args.rounds} (whole process; counts identical on every side):")
        print(f"{'side':<36}{'wall s':>8}{'CPU s':>8}{'rows/s':>10}{'MB/s':>7}{'wall vs ours':>14}{'CPU vs ours':>13}")
        for name, (wall, cpu) in best.items():
            print(f"{name:<36}{wall:8.2f}{cpu:8.2f}{rows / wall:10,.0f}{nbytes / 1e6 / wall:7.2f}"
                  f"{wall / ours[0]:13.2f}x{cpu / ours[1]:12.2f}x")


if __name__ == "__main__":
    main()
