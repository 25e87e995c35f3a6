"""Scale: `pipeline run` on 1x, 4x, 16x and 72x the same real corpus, local engine and a Dask cluster.

For each size it builds the corpus (benchmarks/make_corpus.py), runs the job in a child process
and samples the resident memory of the whole process tree (driver, nannies, workers; for the
external cluster also the scheduler and worker processes) every 100 ms. It prints, per stage
and in total: seconds, docs/s, MB/s and peak memory, then checks that

- peak memory stays under workers x memory_limit + a fixed driver budget at every size, and
  does not grow with the corpus (largest peak <= 1.5x the smallest);
- time grows at most linearly: no more than 1.3x per doubling of the corpus on top of 2x;
- duplicates agree with what was injected. Of every injected pair (copy, original) where both
  survived `clean` (a copy whose original the quality rules drop is dropped with it), at most
  one may be left after dedup: no exact pair may survive, and at least 95% of near pairs must
  not. And the rows dedup removes at scale N = the natural duplicates of the base (exact +
  near, measured at 1x) + the injected exact and near copies that survived `clean`, within
  1% (+ the near copies that may be missed). The split between "exact" and "near" reasons is
  printed, not checked: an exact copy of a document that is itself a near-duplicate of
  another is removed with its group, under the near reason.

    python benchmarks/bench_scale.py             # 1x-72x, 2 workers x 512 MiB (about 45 min: see benchmarks/RESULTS.md)
    python benchmarks/bench_scale.py --scales 1,2 --memory-limit 1GiB   # a quick look

The largest corpus must be at least 4x one worker's memory limit (x72 of the default base is
2.2 GB of text against 512 MiB), else the run fails: out-of-core is the point.

Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import psutil

HERE = Path(__file__).resolve().parent
PY = sys.executable

JOB = """\
[job]
name = "scale x{scale} ({engine})"
output = "{out}"
input = "{corpus}"
seed = 42
stages = ["clean", "dedup", "features", "cluster", "split", "report"]

[engine]
workers = {workers}
memory_limit = "{memory_limit}"
{scheduler_line}

[clean]                     # the corpus mixes SMS, reviews, man pages: rules relaxed so most flows on
min_words = 5
min_stop_words = 0
min_sentences = 0
min_punct_lines_ratio = 0.0
min_alpha_words_ratio = 0.3
max_symbol_ratio = 0.5
max_mean_word_length = 20.0
max_ellipsis_lines_ratio = 1.0
max_bullet_lines_ratio = 1.0

[dedup]
[features]
[cluster]
[split]
shard_rows = 10000          # a pack or report task holds one output shard: 10,000 rows fit a 512 MiB worker
[report]
"""


class TreeMemory:
    """Peak summed RSS of a set of root processes and all their descendants, sampled."""

    def __init__(self, pids: list[int], interval: float = 0.1):
        self.pids = pids
        self.interval = interval
        self.peak = 0
        self.per_process: dict[int, int] = {}  # pid -> its own peak RSS
        self.workers_seen: set[int] = set()  # Dask worker processes (a nanny spawns each; restarts add)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                total += rss
                if proc.pid not in self.per_process:
                    try:
                        if "spawn_main" in " ".join(proc.cmdline()):
                            self.workers_seen.add(proc.pid)
                    except psutil.Error:
                        pass
                self.per_process[proc.pid] = max(self.per_process.get(proc.pid, 0), rss)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_cluster(workers: int, memory_limit: str) -> tuple[str, list[subprocess.Popen]]:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(PY).parent / "dask")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    # as docs/scaling.md tells cluster users: each worker's share of the cores, and no memory pause
    # (what a worker keeps from earlier tasks never frees, so a paused worker stays paused)
    share = str(max(1, (os.cpu_count() or 1) // workers))
    env = {**os.environ, "POLARS_MAX_THREADS": share, "OMP_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": share,
           "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False"}
    for _ in range(workers):
        procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--memory-limit", memory_limit, "--no-dashboard", "--host", "127.0.0.1"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(workers, timeout=120)
    return address, procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run_job(scale: int, corpus: Path, out: Path, engine: str, workers: int, memory_limit: str) -> dict:
    extra: list[subprocess.Popen] = []
    scheduler_line = ""
    if engine == "cluster":
        address, extra = start_cluster(workers, memory_limit)
        scheduler_line = f'scheduler = "{address}"'
    job = out.parent / f"job-x{scale}-{engine}.toml"
    job.write_text(JOB.format(scale=scale, engine=engine, out=out, corpus=corpus, workers=workers,
                              memory_limit=memory_limit, scheduler_line=scheduler_line))
    started = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "pipeline", "run", str(job), "--fresh"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    with TreeMemory([proc.pid, *(p.pid for p in extra)]) as memory:
        output, _ = proc.communicate()
    seconds = time.perf_counter() - started
    stop(extra)
    if proc.returncode != 0:
        print(output)
        raise SystemExit(f"x{scale} {engine}: pipeline run failed")
    finished = json.loads((out / "_job.json").read_text())
    results = finished["results"]
    recycled = finished.get("engine", {}).get("workers_recycled", 0)  # restarted on purpose between passes
    driver = memory.per_process.get(proc.pid, 0)
    others = sorted((v for k, v in memory.per_process.items() if k != proc.pid), reverse=True)
    return {"seconds": seconds, "peak": memory.peak, "driver_peak": driver,
            "worker_recycles": recycled,
            "worker_restarts": max(0, len(memory.workers_seen) - workers - recycled),  # killed by their nanny
            "largest_other_peak": others[0] if others else 0, "results": results, "log": output}


def corpus_stats(corpus: Path) -> tuple[int, int]:
    manifest = json.loads((corpus / "_manifest.json").read_text())
    text_bytes = pl.scan_parquet(str(corpus / "*.parquet")).select(pl.col("text").str.len_bytes().sum()).collect().item()
    return manifest["rows"], text_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1,4,16,72",
                        help="corpus sizes, copies of the base; x72 of the default base is 2.2 GB of text, "
                             "4.2x a 512 MiB worker's memory limit")
    parser.add_argument("--work", type=Path, default=Path("bench-out/scale"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="512MiB", help="per worker")
    parser.add_argument("--driver-budget", default="1.5GiB", help="memory the driver process may use on top of the workers")
    parser.add_argument("--man-limit", type=int, default=1500, help="man pages in the base corpus (0: all)")
    parser.add_argument("--engines", default="local,cluster")
    args = parser.parse_args()
    from dask.utils import format_bytes, parse_bytes

    scales = [int(s) for s in args.scales.split(",")]
    engines = args.engines.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    budget = args.workers * parse_bytes(args.memory_limit) + parse_bytes(args.driver_budget)
    rows: list[dict] = []
    failures: list[str] = []
    for scale in scales:
        corpus = args.work / f"corpus-x{scale}"
        if not (corpus / "_manifest.json").exists():
            cmd = [PY, str(HERE / "make_corpus.py"), "--output", str(corpus), "--scale", str(scale)]
            if args.man_limit:
                cmd += ["--man-limit", str(args.man_limit)]
            subprocess.run(cmd, check=True)
        docs, text_bytes = corpus_stats(corpus)
        truth = pl.read_parquet(args.work / f"corpus-x{scale}.truth.parquet")
        for engine in engines:
            run = run_job(scale, corpus, args.work / f"out-x{scale}-{engine}", engine, args.workers, args.memory_limit)
            by_stage = {r["stage"]: r for r in run["results"]}
            dedup = by_stage.get("dedup", {})
            kept = pl.scan_parquet(str(args.work / f"out-x{scale}-{engine}" / "clean" / "**" / "*.parquet")).select("id").collect()
            surviving = truth.join(kept, on="id", how="semi").join(kept.rename({"id": "original"}), on="original", how="semi")
            unique = pl.scan_parquet(str(args.work / f"out-x{scale}-{engine}" / "unique" / "**" / "*.parquet")).select("id").collect()
            both_left = surviving.join(unique, on="id", how="semi").join(unique.rename({"id": "original"}), on="original", how="semi")
            rows.append({
                "scale": scale, "engine": engine, "docs": docs, "mb": text_bytes / 1e6,
                "seconds": run["seconds"], "peak": run["peak"], "stages": by_stage,
                "driver_peak": run["driver_peak"], "largest_other_peak": run["largest_other_peak"],
                "worker_restarts": run["worker_restarts"], "worker_recycles": run["worker_recycles"],
                "exact_removed": dedup.get("dropped", {}).get("exact_duplicate", 0),
                "near_removed": dedup.get("dropped", {}).get("near_duplicate", 0),
                "injected_exact": surviving.filter(pl.col("kind") == "exact").height,
                "injected_near": surviving.filter(pl.col("kind") == "near").height,
                "exact_pairs_left": both_left.filter(pl.col("kind") == "exact").height,
                "near_pairs_left": both_left.filter(pl.col("kind") == "near").height,
            })
            print(f"x{scale:<3} {engine:<8} {docs:>9} docs {text_bytes / 1e6:8.0f} MB  {run['seconds']:8.1f} s  "
                  f"{docs / run['seconds']:8.0f} docs/s  {text_bytes / 1e6 / run['seconds']:6.2f} MB/s  "
                  f"peak {format_bytes(run['peak'])} (driver {format_bytes(run['driver_peak'])}, largest "
                  f"worker/scheduler {format_bytes(run['largest_other_peak'])}; workers killed {run['worker_restarts']}, "
                  f"recycled {run['worker_recycles']})",
                  flush=True)

    print("\nper stage (seconds, docs/s in)")
    stages = list(rows[0]["stages"])
    print(f"{'run':<16}" + "".join(f"{s:>18}" for s in stages))
    for row in rows:
        cells = []
        for stage in stages:
            result = row["stages"].get(stage)
            cells.append(f"{result['seconds']:8.1f}s {result['rows_in'] / max(result['seconds'], 1e-9):7.0f}/s" if result else "-")
        print(f"x{row['scale']:<3}{row['engine']:<12}" + "".join(f"{c:>18}" for c in cells))

    for engine in engines:
        mine = [r for r in rows if r["engine"] == engine]
        for row in mine:
            if row["peak"] > budget:
                failures.append(f"{engine} x{row['scale']}: peak {format_bytes(row['peak'])} over budget {format_bytes(budget)}")
        if len(mine) > 1:
            first, last = mine[0], mine[-1]
            if last["peak"] > 1.5 * first["peak"]:
                failures.append(f"{engine}: peak memory grew from {format_bytes(first['peak'])} to {format_bytes(last['peak'])}")
            doublings = math.log2(last["docs"] / first["docs"])
            allowed = (2 * 1.3) ** doublings
            if last["seconds"] / first["seconds"] > allowed:
                failures.append(f"{engine}: time grew {last['seconds'] / first['seconds']:.1f}x for {last['docs'] / first['docs']:.0f}x docs (allowed {allowed:.1f}x)")
            natural = first["exact_removed"] + first["near_removed"] if first["scale"] == 1 else None
            for row in mine:
                injected = row["injected_exact"] + row["injected_near"]
                removed = row["exact_removed"] + row["near_removed"]
                print(f"{engine} x{row['scale']}: removed {removed} (exact {row['exact_removed']}, near "
                      f"{row['near_removed']}); injected copies that survived clean: {row['injected_exact']} exact, "
                      f"{row['injected_near']} near; pairs left after dedup: {row['exact_pairs_left']} exact, "
                      f"{row['near_pairs_left']} near")
                if row["exact_pairs_left"]:
                    failures.append(f"{engine} x{row['scale']}: {row['exact_pairs_left']} injected exact pairs survived dedup")
                if row["near_pairs_left"] > 0.05 * row["injected_near"]:
                    failures.append(f"{engine} x{row['scale']}: {row['near_pairs_left']} of {row['injected_near']} injected near pairs survived dedup")
                if natural is None:
                    continue
                expected = natural + injected
                print(f"{engine} x{row['scale']}:   expected removed {expected} = {natural} natural (x1) + {injected} injected")
                low = expected - row["near_pairs_left"] - 0.01 * expected - 2
                if not low <= removed <= expected + 0.01 * expected + 2:
                    failures.append(f"{engine} x{row['scale']}: removed {removed}, expected {expected}")
    largest = max(rows, key=lambda r: r["mb"])
    ratio = largest["mb"] * 1e6 / parse_bytes(args.memory_limit)
    print(f"\nlargest corpus: {largest['mb']:.0f} MB of text = {ratio:.1f}x the worker memory limit ({args.memory_limit})")
    if ratio < 4:
        failures.append(f"the largest corpus is {ratio:.1f}x the worker memory limit, not at least 4x")
    if "local" in engines and "cluster" in engines:
        print("\nlocal vs cluster (seconds)")
        for scale in scales:
            pair = {r["engine"]: r for r in rows if r["scale"] == scale}
            print(f"x{scale}: local {pair['local']['seconds']:.1f}s, cluster {pair['cluster']['seconds']:.1f}s, "
                  f"ratio {pair['cluster']['seconds'] / pair['local']['seconds']:.2f}")
    (args.work / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        raise SystemExit(1)
    print("\nall scale checks passed")


if __name__ == "__main__":
    main()
