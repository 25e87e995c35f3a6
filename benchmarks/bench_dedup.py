"""Benchmark: `pipeline dedup` against datasketch's MinHashLSH on the machine's man pages.

Corpus: every man page installed under /usr/share/man (all sections and languages, `.so`
redirects skipped), groff markup stripped to text with regular expressions. Truth: every pair
with Jaccard >= 0.7 of word 5-gram shingle sets (the definition in shared/data/README.md),
found exactly by a prefix-filtered all-pairs join (rarest shingles first; a pair with Jaccard
>= t must share one of the first |A| - ceil(t*|A|) + 1 shingles of each), coded here
independently of the stage (Python `re` tokens, Python string shingles).

Both tools are scored the same way: recall = true pairs (Jaccard >= 0.8) that end up in one
duplicate group; precision = removed documents that have a true partner with Jaccard >= 0.7.
Peak memory is the peak resident set of the process tree (driver + Dask workers), sampled.

    .venv/bin/python benchmarks/bench_dedup.py [--limit N] [--cache /tmp/bench_dedup]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.dataset import Dataset, write_shard  # noqa: E402
from pipeline.engine import Engine  # noqa: E402

MAN = Path("/usr/share/man")
SHARD_DOCS = 2500

_COMMENT = re.compile(r'^\.\s*\\".*$|^\'\\".*$', re.M)
_REQUEST = re.compile(r"^[.'][ \t]*([A-Za-z]{1,3}|\\\")\b[ \t]*", re.M)
_FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_SPECIAL = re.compile(r"\\(\(..|\[[^\]]*\]|\*(\(..|\[[^\]]*\]|.)|[&|^%0dukvhwsn,/](\'[^\']*\'|\[[^\]]*\]|[-+]?\d)?)")


def strip_groff(source: str) -> str:
    """Man-page groff → plain text: comments dropped, request names dropped (their arguments,
    e.g. section titles, kept), font and special escapes removed."""
    text = _COMMENT.sub("", source)
    text = _REQUEST.sub("", text)
    text = _FONT.sub("", text)
    text = text.replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ").replace('\\"', "")
    text = _SPECIAL.sub("", text)
    return re.sub(r"[ \t]+", " ", text)


def build_corpus(folder: Path, limit: int | None) -> Path:
    """Man pages → Parquet shards of SHARD_DOCS documents (id = path), cached."""
    if (folder / "_manifest.done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    paths = sorted(p for p in MAN.rglob("*") if p.is_file() and not p.is_symlink())
    ids, texts = [], []
    for path in paths:
        try:
            raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        except OSError:
            continue
        source = raw.decode("utf-8", errors="replace")
        if source.lstrip().startswith(".so ") and len(source) < 300:
            continue  # a redirect to another page
        ids.append(str(path.relative_to(MAN)))
        texts.append(strip_groff(source))
    frame = pl.DataFrame({"id": ids, "text": texts})
    for i, start in enumerate(range(0, frame.height, SHARD_DOCS)):
        write_shard(frame.slice(start, SHARD_DOCS), folder, f"part-{i:05d}.parquet")
    (folder / "_manifest.done").write_text(str(frame.height))
    return folder


def load_corpus(folder: Path, limit: int | None) -> pl.DataFrame:
    frame = pl.read_parquet(sorted(str(p) for p in folder.glob("part-*.parquet")))
    return frame.head(limit) if limit else frame


def python_shingles(text: str, n: int = 5) -> set[str]:
    tokens = re.findall(r"\w+", text.lower())
    if len(tokens) < n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def shingle_sets(texts: list[str]) -> pl.DataFrame:
    """(doc, sh): each document's distinct shingles, hashed to 64 bits (Python `hash`, one process)."""
    docs, hashes = [], []
    for i, text in enumerate(texts):
        shingles = python_shingles(text)
        docs.append(np.full(len(shingles), i, np.int64))
        hashes.append(np.fromiter((hash(s) for s in shingles), np.int64, len(shingles)))
    return pl.DataFrame({"doc": np.concatenate(docs), "sh": np.concatenate(hashes)})


def exact_pairs(texts: list[str], threshold: float = 0.7, chunk: int = 2_000_000) -> pl.DataFrame:
    """Every pair (a < b, row numbers) with Jaccard >= threshold, found exactly.

    Prefix filter: order each set by global shingle frequency (rarest first); two sets with
    Jaccard >= t share a shingle among the first |A| - ceil(t*|A|) + 1 of each. Candidates also
    pass the size filter min(|A|,|B|) >= t*max(|A|,|B|); each is then scored exactly from its
    sorted shingle arrays. Exact duplicate texts are collapsed first (one representative) and
    expanded at the end, so large groups of identical pages cost nothing quadratic.
    """
    order = pl.DataFrame({"text": texts}).with_row_index("doc").with_columns(pl.col("doc").cast(pl.Int64))
    reps = order.group_by("text").agg(rep=pl.col("doc").min(), members=pl.col("doc"))
    unique_texts = reps.sort("rep")
    rep_ids = unique_texts["rep"].to_numpy()
    sets = shingle_sets(unique_texts["text"].to_list())  # doc = index into unique_texts
    sizes = sets.group_by("doc").len("n").sort("doc")
    n_of = np.zeros(len(rep_ids), np.int64)
    n_of[sizes["doc"].to_numpy()] = sizes["n"].to_numpy()
    freq = sets.group_by("sh").len("f")
    prefix = (sets.join(freq, on="sh").join(sizes, on="doc").sort("doc", "f", "sh")
              .with_columns(rank=pl.int_range(pl.len()).over("doc"))
              .filter(pl.col("rank") < pl.col("n") - (pl.col("n") * threshold).ceil() + 1)
              .select("doc", "sh", "n"))
    cand = (prefix.join(prefix, on="sh", suffix="_b")
            .filter(pl.col("doc") < pl.col("doc_b"))
            .filter(pl.min_horizontal("n", "n_b") >= threshold * pl.max_horizontal("n", "n_b"))
            .select(a="doc", b="doc_b").unique().sort("a", "b"))
    print(f"truth: {len(texts)} pages, {len(rep_ids)} distinct texts, {sets.height} shingles, "
          f"{cand.height} prefix-filter candidates", flush=True)
    sets = sets.sort("doc", "sh")
    offsets = np.concatenate([[0], np.cumsum(n_of)])
    values = sets["sh"].to_numpy()
    found = []
    for a, b in cand.iter_rows():
        sa, sb = values[offsets[a]:offsets[a + 1]], values[offsets[b]:offsets[b + 1]]
        inter = np.intersect1d(sa, sb, assume_unique=True).size
        jaccard = inter / (sa.size + sb.size - inter)
        if jaccard >= threshold:
            found.append((rep_ids[a], rep_ids[b], jaccard))
    pairs = pl.DataFrame(found, schema={"a": pl.Int64, "b": pl.Int64, "jaccard": pl.Float64}, orient="row")
    # expand: identical texts are pairs at 1.0, and inherit their representative's pairs
    members = reps.select("rep", "members").explode("members").rename({"members": "doc"})
    same = (members.join(members, on="rep", suffix="_b").filter(pl.col("doc") < pl.col("doc_b"))
            .select(a="doc", b="doc_b", jaccard=pl.lit(1.0)))
    expanded = (pairs.join(members.rename({"rep": "a", "doc": "da"}), on="a")
                .join(members.rename({"rep": "b", "doc": "db"}), on="b")
                .select(a=pl.min_horizontal("da", "db"), b=pl.max_horizontal("da", "db"), jaccard="jaccard"))
    return pl.concat([expanded, same]).unique(["a", "b"]).sort("a", "b")


def score(kept_of: dict[str, str], removed: list[str], truth: pl.DataFrame) -> tuple[float, float]:
    strong = truth.filter(pl.col("jaccard") >= 0.8)
    together = sum(kept_of.get(a, a) == kept_of.get(b, b) for a, b in strong.select("a", "b").iter_rows())
    partners = set(truth["a"]) | set(truth["b"])
    precise = sum(doc in partners for doc in removed)
    return together / max(1, strong.height), precise / max(1, len(removed))


class PeakMemory:
    """Peak resident memory (MB) of this process and all its children, sampled every 20 ms."""

    def __init__(self):
        self.peak = 0.0
        self.peak_child = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                children = me.children(recursive=True)
                child = [c.memory_info().rss for c in children]
                total = me.memory_info().rss + sum(child)
                self.peak = max(self.peak, total / 1e6)
                self.peak_child = max(self.peak_child, max(child, default=0) / 1e6)
            except psutil.Error:
                pass
            time.sleep(0.02)

    @staticmethod
    def _cpu() -> dict[int, float]:
        me = psutil.Process()
        seconds = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                seconds[proc.pid] = times.user + times.system
            except psutil.Error:
                pass
        return seconds

    def __enter__(self):
        self._cpu_start = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        end = self._cpu()
        # CPU seconds of the process tree: comparable when other jobs share the machine
        self.cpu = sum(v - self._cpu_start.get(pid, 0.0) for pid, v in end.items())
        self._stop.set()
        self._thread.join()


def run_ours(corpus: Path, out: Path, limit: int | None, workers: int, **options) -> dict:
    import pipeline.dedup as dedup

    source = corpus
    if limit:
        source = out / "input"
        shutil.rmtree(source, ignore_errors=True)
        frame = load_corpus(corpus, limit)
        for i, start in enumerate(range(0, frame.height, SHARD_DOCS)):
            write_shard(frame.slice(start, SHARD_DOCS), source, f"part-{i:05d}.parquet")
    shutil.rmtree(out / "unique", ignore_errors=True)
    shutil.rmtree(out / "duplicates", ignore_errors=True)
    with Engine(workers=workers, memory_limit="4GiB", progress=False) as engine:
        engine.map(len, [[1]])  # start the cluster before the clock
        base = psutil.Process().memory_info().rss / 1e6
        with PeakMemory() as memory:
            started = time.perf_counter()
            result = dedup.run([source], out / "unique", dedup.Options(**options), engine, fresh=True)
            seconds = time.perf_counter() - started
    removed = pl.read_parquet(out / "duplicates" / "*.parquet") if Dataset(out / "duplicates").rows() else None
    kept_of = dict(zip(removed["id"], removed["kept_id"], strict=True)) if removed is not None else {}
    return {"seconds": seconds, "cpu": memory.cpu, "peak_mb": memory.peak, "peak_worker_mb": memory.peak_child,
            "driver_base_mb": base, "kept_of": kept_of, "removed": list(kept_of), "result": result}


def run_datasketch(ids: list[str], texts: list[str], threshold: float = 0.8, num_perm: int = 128) -> dict:
    """MinHashLSH as datasketch's README shows: MinHash.update per shingle, insert, query."""
    from datasketch import MinHash, MinHashLSH

    with PeakMemory() as memory:
        started = time.perf_counter()
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        signatures = []
        for key, text in zip(ids, texts, strict=True):
            m = MinHash(num_perm=num_perm)
            for shingle in python_shingles(text):
                m.update(shingle.encode("utf8"))
            lsh.insert(key, m)
            signatures.append(m)
        parent = {}

        def find(x):
            while parent.get(x, x) != x:
                parent[x] = parent.get(parent[x], parent[x])
                x = parent[x]
            return x

        order = {key: i for i, key in enumerate(ids)}
        for key, m in zip(ids, signatures, strict=True):
            for other in lsh.query(m):
                ra, rb = find(key), find(other)
                if ra != rb:  # the earlier document is the root: it is kept
                    first, second = (ra, rb) if order[ra] < order[rb] else (rb, ra)
                    parent[second] = first
        kept_of = {key: find(key) for key in ids if find(key) != key}
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": memory.cpu, "peak_mb": memory.peak, "kept_of": kept_of, "removed": list(kept_of),
            "lsh_params": (lsh.b, lsh.r)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N pages only")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_dedup"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-datasketch", action="store_true")
    parser.add_argument("--single-core", action="store_true", help="also run ours in-process (workers=0)")
    args = parser.parse_args()

    corpus = build_corpus(args.cache / "corpus", None)
    frame = load_corpus(corpus, args.limit)
    ids, texts = frame["id"].to_list(), frame["text"].to_list()
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus: {len(ids)} man pages from {MAN}, {megabytes:.1f} MB of text")

    truth_file = args.cache / f"truth-{len(ids)}.parquet"
    if not truth_file.exists():
        started = time.perf_counter()
        exact_pairs(texts).write_parquet(truth_file)
        print(f"truth: exact prefix-filtered all-pairs join in {time.perf_counter() - started:.1f}s")
    rows = pl.read_parquet(truth_file)
    truth = rows.select(a=pl.col("a").map_elements(lambda i: ids[i], pl.String),
                        b=pl.col("b").map_elements(lambda i: ids[i], pl.String), jaccard="jaccard")
    print(f"truth: {truth.filter(pl.col('jaccard') >= 0.8).height} pairs with Jaccard >= 0.8, "
          f"{truth.height} >= 0.7")

    runs = {}
    half = len(ids) // 2
    ours_half = run_ours(corpus, args.cache / "ours-half", half, args.workers)
    runs[f"pipeline dedup ({args.workers} workers)"] = ours = run_ours(corpus, args.cache / "ours", args.limit, args.workers)
    runs[f"pipeline dedup --no-verify ({args.workers} workers)"] = run_ours(
        corpus, args.cache / "ours-noverify", args.limit, args.workers, verify=False)
    if args.single_core:
        runs["pipeline dedup (in-process, 1 core)"] = run_ours(corpus, args.cache / "ours-local", args.limit, 0)
        runs["pipeline dedup --no-verify (in-process)"] = run_ours(
            corpus, args.cache / "ours-local-noverify", args.limit, 0, verify=False)
    if not args.no_datasketch:
        runs["datasketch MinHashLSH"] = run_datasketch(ids, texts)

    print(f"\nbands x rows: ours {ours['result'].details['bands']}x{ours['result'].details['rows']} "
          f"(verify on), datasketch {runs.get('datasketch MinHashLSH', {}).get('lsh_params')}")
    header = (f"{'tool':<38} {'seconds':>8} {'CPU s':>7} {'MB/s':>7} {'peak MB':>8} {'removed':>8} "
              f"{'recall':>7} {'precision':>9}")
    print(header)
    print("-" * len(header))
    for name, run in runs.items():
        recall, precision = score(run["kept_of"], run["removed"], truth)
        run["recall"], run["precision"] = recall, precision
        print(f"{name:<38} {run['seconds']:8.1f} {run['cpu']:7.1f} {megabytes / run['seconds']:7.2f} {run['peak_mb']:8.0f} "
              f"{len(run['removed']):8d} {recall:7.3f} {precision:9.3f}")
    if "datasketch MinHashLSH" in runs:
        ds = runs["datasketch MinHashLSH"]["seconds"]
        for name, run in runs.items():
            if name.startswith("pipeline"):
                print(f"speed-up of {name} over datasketch: {ds / run['seconds']:.1f}x wall-clock, "
                      f"{runs['datasketch MinHashLSH']['cpu'] / run['cpu']:.1f}x in CPU seconds")
    print(f"load average during the run: {os.getloadavg()} on {os.cpu_count()} cores (other jobs share them)")
    print(f"\npeak memory of the largest Dask worker: {ours_half['peak_worker_mb']:.0f} MB on "
          f"{half} pages, {ours['peak_worker_mb']:.0f} MB on {len(ids)} pages "
          f"(shards of {SHARD_DOCS} documents; process tree total {ours_half['peak_mb']:.0f} → {ours['peak_mb']:.0f} MB)")
    print(f"ours, details: {ours['result'].details}")


if __name__ == "__main__":
    main()
