"""Benchmark: `pipeline dedup` against rensa and datasketch, whole process each, on real text.

Corpora: `man` (default), every man page installed under /usr/share/man (all sections and
languages, `.so` redirects skipped), groff markup stripped to text with regular expressions;
`spdx`, the 728 SPDX licences of shared/data/neardup. Truth: every pair with Jaccard >= 0.7 of
word 5-gram shingle sets (the definition in shared/data/README.md): for the man pages found
exactly by a prefix-filtered all-pairs join (rarest shingles first; a pair with Jaccard >= t
must share one of the first |A| - ceil(t*|A|) + 1 shingles of each), coded here independently
of the stage (Python `re` tokens, Python string shingles); for SPDX its published pairs file.

Every tool runs as its own process, timed whole (interpreter start, imports, reading the
Parquet input, dedup, writing the kept documents): ours is `python -m pipeline dedup` with its
defaults; rensa and datasketch are this script's `--child` modes, each on its documented fast
path (rensa: `RMinHashDeduplicator.add_pairs` as its README shows; datasketch:
`MinHash.update_batch` + `MinHashLSH`), fed the same word 5-gram shingles (Python `re`).
Tools alternate within a round and the order flips every round; the median of the rounds is
reported with wall-clock and CPU ratios (CPU = the process and its children, Dask workers
included). All tools are scored the same way, only on which documents survive: recall = true
pairs (Jaccard >= 0.8) of which at most one survives; precision = removed documents that have a
true partner with Jaccard >= 0.7. Peak memory: the kernel's peak resident set of the largest
process of the run (`wait4`), which is the whole peak for single-process runs (rensa, datasketch,
ours on threads); `--tree-memory` samples the whole process tree every 20 ms instead (for runs
on Dask workers), which costs a two-thread tool about 7 % of its wall-clock: the sampler's
thread takes CPU from the two cores that a single-threaded peer leaves idle.

    .venv/bin/python benchmarks/bench_dedup.py [--corpus man|spdx] [--rounds 3] [--cache /tmp/bench_dedup]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.dataset import Dataset, write_shard  # noqa: E402

MAN = Path("/usr/share/man")
SPDX = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "neardup"
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


def truth_of(corpus: str, frame: pl.DataFrame, cache: Path) -> pl.DataFrame:
    """(a, b, jaccard) by document id: every pair with Jaccard >= 0.7, found exactly."""
    if corpus == "spdx":
        return pl.read_ndjson(SPDX / "spdx_pairs.jsonl").select("a", "b", "jaccard")
    ids, texts = frame["id"].to_list(), frame["text"].to_list()
    truth_file = cache / f"truth-{len(ids)}.parquet"
    if not truth_file.exists():
        started = time.perf_counter()
        exact_pairs(texts).write_parquet(truth_file)
        print(f"truth: exact prefix-filtered all-pairs join in {time.perf_counter() - started:.1f}s")
    rows = pl.read_parquet(truth_file)
    id_of = pl.Series(ids)
    return pl.DataFrame({"a": id_of.gather(rows["a"]), "b": id_of.gather(rows["b"]), "jaccard": rows["jaccard"]})


def spdx_corpus(folder: Path) -> Path:
    """The SPDX licences as three Parquet shards (cached)."""
    if (folder / "_manifest.done").exists():
        return folder
    docs = pl.read_ndjson(SPDX / "spdx_licenses.jsonl").select("id", "text")
    for i, start in enumerate(range(0, docs.height, 250)):
        write_shard(docs.slice(start, 250), folder, f"part-{i:05d}.parquet")
    (folder / "_manifest.done").write_text(str(docs.height))
    return folder


def score(removed: set[str], truth: pl.DataFrame) -> tuple[float, float]:
    """recall: share of true pairs (Jaccard >= 0.8) that do not both survive (one of them, or
    both, removed); precision: share of removed documents with a true partner at Jaccard >= 0.7
    (the truth's tolerance). The same rule for every tool: only which documents survive counts."""
    strong = truth.filter(pl.col("jaccard") >= 0.8)
    caught = sum(a in removed or b in removed for a, b in strong.select("a", "b").iter_rows())
    partners = set(truth["a"]) | set(truth["b"])
    return caught / max(1, strong.height), sum(doc in partners for doc in removed) / max(1, len(removed))


# -- the peers, each run in its own process (python bench_dedup.py --child TOOL CORPUS OUT) -----
def child_rensa(corpus: Path, out: Path, threshold: float, num_perm: int) -> None:
    """rensa as its README shows: RMinHashDeduplicator(threshold, num_perm, use_lsh=True) fed
    (key, tokens) pairs with `add_pairs` (its batch entry: the sketches are built in Rust from
    the token lists, no Python object per document); tokens = word 5-gram shingles."""
    from rensa import RMinHashDeduplicator

    frame = pl.read_parquet(sorted(str(p) for p in corpus.glob("part-*.parquet")), columns=["id", "text"])
    dedup = RMinHashDeduplicator(threshold=threshold, num_perm=num_perm, use_lsh=True)
    keep = dedup.add_pairs((key, list(python_shingles(text))) for key, text in zip(frame["id"], frame["text"], strict=True))
    flags = pl.Series(keep, dtype=pl.Boolean)
    frame.filter(flags).write_parquet(out / "unique.parquet")
    frame.filter(~flags).select("id").write_parquet(out / "removed.parquet")


def child_datasketch(corpus: Path, out: Path, threshold: float, num_perm: int) -> None:
    """datasketch on its documented fast path: `MinHash.update_batch` with every shingle of a
    document at once, then MinHashLSH: a document whose query finds an earlier one is removed,
    else it is inserted (streaming dedup, as its README's MinHashLSH example queries)."""
    from datasketch import MinHash, MinHashLSH

    frame = pl.read_parquet(sorted(str(p) for p in corpus.glob("part-*.parquet")), columns=["id", "text"])
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    keep = []
    for key, text in zip(frame["id"], frame["text"], strict=True):
        m = MinHash(num_perm=num_perm)
        m.update_batch([s.encode("utf8") for s in python_shingles(text)])
        duplicate = bool(lsh.query(m))
        if not duplicate:
            lsh.insert(key, m)
        keep.append(not duplicate)
    flags = pl.Series(keep, dtype=pl.Boolean)
    frame.filter(flags).write_parquet(out / "unique.parquet")
    frame.filter(~flags).select("id").write_parquet(out / "removed.parquet")


class TreeSampler:
    """Peak resident memory (MB) of a process and its descendants: total and largest one."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peak = self.peak_one = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                rss = [p.memory_info().rss / 1e6 for p in procs]
                self.peak, self.peak_one = max(self.peak, sum(rss)), max(self.peak_one, max(rss))
            except psutil.Error:
                pass
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def timed(command: list[str], tree_memory: bool = False) -> dict:
    """Run a whole process (interpreter start, imports, reading, work, writing); wall seconds,
    CPU seconds of it and its children (Dask workers included), peak memory (see the module
    docstring: the largest process's, or with `tree_memory` the sampled tree's)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid) if tree_memory else None
    output = proc.stdout.read()  # until the process closes it (exits)
    _, status, usage = os.wait4(proc.pid, 0)  # this run's own resource usage, not a running total
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if sampler:
        sampler.stop()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{output}")
    peak_one = usage.ru_maxrss / 1024  # KiB on Linux
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "peak_mb": sampler.peak if sampler else peak_one * 1.048576,
            "peak_one_mb": sampler.peak_one if sampler else peak_one * 1.048576, "output": output}


def commands(corpus: Path, out: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    me = [sys.executable, str(Path(__file__).resolve())]
    ours = [sys.executable, "-m", "pipeline", "dedup", "--input", str(corpus), "--output", str(out / "ours" / "unique"),
            "--fresh", "--threshold", str(args.threshold)]
    if args.workers is not None:
        ours += ["--workers", str(args.workers)]
    tools = {"pipeline dedup": ours}
    for peer in args.peers:
        tools[peer] = [*me, "--child", peer, "--corpus-dir", str(corpus), "--out", str(out / peer),
                       "--threshold", str(args.threshold)]
    return tools


def removed_ids(tool: str, out: Path) -> set[str]:
    if tool == "pipeline dedup":
        audit = out / "ours" / "duplicates"
        return set(pl.read_parquet(audit / "*.parquet")["id"]) if Dataset(audit).rows() else set()
    return set(pl.read_parquet(out / tool / "removed.parquet")["id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=["man", "spdx"], default="man")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_dedup"))
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tool, alternating")
    parser.add_argument("--workers", type=int, default=None, help="ours: --workers (default: the stage's)")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--tree-memory", action="store_true",
                        help="sample the whole process tree's memory every 20 ms (for runs on Dask workers; "
                             "slows a multi-threaded tool by ~7%%)")
    parser.add_argument("--peers", nargs="*", default=["rensa", "datasketch"], choices=["rensa", "datasketch"])
    parser.add_argument("--child", choices=["rensa", "datasketch"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.out.mkdir(parents=True, exist_ok=True)
        child = child_rensa if args.child == "rensa" else child_datasketch
        child(args.corpus_dir, args.out, args.threshold, 128)
        return

    corpus = (build_corpus(args.cache / "corpus", None) if args.corpus == "man"
              else spdx_corpus(args.cache / "spdx"))
    frame = load_corpus(corpus, None)
    megabytes = frame["text"].str.len_bytes().sum() / 1e6
    print(f"corpus: {frame.height} documents ({args.corpus}), {megabytes:.1f} MB of text")
    truth = truth_of(args.corpus, frame, args.cache)
    print(f"truth: {truth.filter(pl.col('jaccard') >= 0.8).height} pairs with Jaccard >= 0.8, {truth.height} >= 0.7")

    out = args.cache / f"runs-{args.corpus}"
    tools = commands(corpus, out, args)
    runs: dict[str, list[dict]] = {name: [] for name in tools}
    names = list(tools)
    for round_ in range(args.rounds):
        order = names if round_ % 2 == 0 else names[::-1]  # alternate: no tool always runs first
        for name in order:
            shutil.rmtree(out / ("ours" if name == "pipeline dedup" else name), ignore_errors=True)
            run = timed(tools[name], args.tree_memory)
            run["recall"], run["precision"] = score(removed_ids(name, out), truth)
            run["removed"] = len(removed_ids(name, out))
            runs[name].append(run)
            print(f"  round {round_ + 1}: {name:<16} {run['wall']:6.2f} s wall {run['cpu']:6.2f} s CPU", flush=True)

    print(f"\nmedian of {args.rounds} whole-process runs each ({frame.height} documents, {megabytes:.1f} MB):")
    header = f"{'tool':<16} {'wall s':>7} {'CPU s':>7} {'peak MB':>8} {'removed':>8} {'recall':>7} {'precision':>9}"
    print(header)
    print("-" * len(header))
    median = {}
    for name, rs in runs.items():
        median[name] = {k: float(np.median([r[k] for r in rs])) for k in ("wall", "cpu", "peak_mb")}
        last = rs[-1]
        print(f"{name:<16} {median[name]['wall']:7.2f} {median[name]['cpu']:7.2f} {median[name]['peak_mb']:8.0f} "
              f"{last['removed']:8d} {last['recall']:7.3f} {last['precision']:9.3f}")
    ours = median["pipeline dedup"]
    for peer in args.peers:
        print(f"{peer} / pipeline dedup: wall-clock ratio {median[peer]['wall'] / ours['wall']:.2f}x, "
              f"CPU ratio {median[peer]['cpu'] / ours['cpu']:.2f}x (above 1: ours is faster / uses less)")
    print(f"load average after the runs: {os.getloadavg()} on {os.cpu_count()} cores (the machine was shared)")
    print("ours, stage output of the last run:", runs["pipeline dedup"][-1]["output"].strip().splitlines()[-1])


if __name__ == "__main__":
    main()
