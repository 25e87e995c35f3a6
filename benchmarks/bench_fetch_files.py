"""`pipeline fetch files` on instruction JSONL against the bare fast paths of Polars and 🤗 datasets.

The input is GSM8K train (7,473 problems, ../shared/data/instruct) repeated N times into one
uncompressed JSONL file; a second copy has one malformed line in every 10,000 (bad JSON, invalid
UTF-8, a record with an empty answer). Every run is a whole child process (interpreter start,
imports, reading, writing), the sides alternate, and the median of the rounds is shown:

- ours: `python -m pipeline fetch files --kind instruction --workers 0` (reads, validates, maps
  onto the record schema, writes Parquet shards and the rejected dataset);
- polars: `pl.scan_ndjson(file).sink_parquet(out)` (its streaming fast path; no validation);
- datasets: `load_dataset("json", data_files=file, split="train")` (pyarrow's JSON reader into an
  Arrow cache on disk, its documented way to load JSONL).

The peers run on the clean file only: on the one with bad lines both stop with an error (shown).

    .venv/bin/python benchmarks/bench_fetch_files.py              # --repeat 40 --rounds 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "instruct" / "gsm8k_train.jsonl.gz"

POLARS = "import polars as pl, sys; pl.scan_ndjson(sys.argv[1]).sink_parquet(sys.argv[2])"
DATASETS = ("import datasets, sys; datasets.disable_progress_bars(); "
            "d = datasets.load_dataset('json', data_files=sys.argv[1], split='train', cache_dir=sys.argv[2]); "
            "print(d.num_rows)")


def timed(command: list[str]) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds (user + system of the child), exit code and last stderr line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return wall, cpu, done.returncode, last


def make_inputs(folder: Path, repeat: int) -> tuple[Path, Path]:
    lines = gzip.decompress(DATA.read_bytes()).splitlines(keepends=True)
    clean = folder / "clean.jsonl"
    with open(clean, "wb") as handle:
        for _ in range(repeat):
            handle.writelines(lines)
    dirty = folder / "dirty.jsonl"
    bad = [b'{"question": "cut off\n', b'{"question": "caf\xe9", "answer": "x"}\n',
           json.dumps({"question": "Empty answer?", "answer": ""}).encode() + b"\n"]
    with open(clean, "rb") as source, open(dirty, "wb") as handle:
        for number, line in enumerate(source):
            handle.write(bad[number // 10_000 % 3] if number % 10_000 == 9_999 else line)
    return clean, dirty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=40, help="copies of GSM8K train in the file")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"the shared data is missing: {DATA}")
    work = Path(tempfile.mkdtemp(prefix="bench-fetch-files-"))
    try:
        clean, dirty = make_inputs(work, args.repeat)
        rows = 7473 * args.repeat
        print(f"input: {rows:,} records, {clean.stat().st_size / 2**20:.0f} MiB of JSONL; "
              f"{rows // 10_000} bad lines in the dirty copy; {args.rounds} rounds, median shown")
        sides = {
            "ours (clean)": lambda out: [sys.executable, "-m", "pipeline", "fetch", "files", "--glob", str(clean),
                                         "--kind", "instruction", "--workers", "0", "--output", str(out / "raw")],
            "ours (dirty)": lambda out: [sys.executable, "-m", "pipeline", "fetch", "files", "--glob", str(dirty),
                                         "--kind", "instruction", "--workers", "0", "--output", str(out / "raw")],
            "polars": lambda out: [sys.executable, "-c", POLARS, str(clean), str(out / "out.parquet")],
            "datasets": lambda out: [sys.executable, "-c", DATASETS, str(clean), str(out / "cache")],
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, command in sides.items():
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                wall, cpu, code, last = timed(command(out))
                if code:
                    sys.exit(f"{name} failed: {last}")
                results[name].append((wall, cpu))
        print(f"{'side':<14} {'wall s':>8} {'CPU s':>8} {'MB/s wall':>10}")
        size = clean.stat().st_size / 2**20
        median = {n: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for n, r in results.items()}
        for name, (wall, cpu) in median.items():
            print(f"{name:<14} {wall:8.2f} {cpu:8.2f} {size / wall:10.1f}")
        ours_wall, ours_cpu = median["ours (clean)"]
        for peer in ("polars", "datasets"):
            wall, cpu = median[peer]
            print(f"ratio ours/{peer}: wall {ours_wall / wall:.2f}x, CPU {ours_cpu / cpu:.2f}x")
        for name, code in (("polars", POLARS), ("datasets", DATASETS)):
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            target = str(out / "out.parquet") if name == "polars" else str(out / "cache")
            _, _, status, last = timed([sys.executable, "-c", code, str(dirty), target])
            print(f"{name} on the dirty copy: exit {status}: {last[:150]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
