"""dedup on the SPDX licence texts against their exact near-duplicate truth, plus the pieces."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import pipeline.dedup as dedup
from pipeline.config import ConfigError, validate_options
from pipeline.dataset import Dataset, write_shard
from pipeline.dedup import minhash
from pipeline.stage import batch_starts


def truth_shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """The truth's definition (shared/data/README.md), written independently of the stage."""
    tokens = re.findall(r"\w+", text.lower())
    if len(tokens) < n:
        return {tuple(tokens)}
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


@pytest.fixture(scope="module")
def spdx(shared_data: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    folder = shared_data / "neardup"
    return pl.read_ndjson(folder / "spdx_licenses.jsonl"), pl.read_ndjson(folder / "spdx_pairs.jsonl")


@pytest.fixture(scope="module")
def spdx_input(spdx, tmp_path_factory) -> Path:
    docs, _ = spdx
    root = tmp_path_factory.mktemp("spdx") / "clean"
    for i in range(3):  # three shards, so duplicates must be found across shards
        write_shard(docs.slice(i * 250, 250).select("id", "text"), root, f"part-{i}.parquet")
    return root


def recall_precision(removed: pl.DataFrame, truth: pl.DataFrame) -> tuple[float, float]:
    kept_of = dict(zip(removed["id"], removed["kept_id"], strict=True))
    strong = truth.filter(pl.col("jaccard") >= 0.8)
    together = sum(kept_of.get(a, a) == kept_of.get(b, b) for a, b in strong.select("a", "b").iter_rows())
    partners = set(truth["a"]) | set(truth["b"])
    precise = sum(doc in partners for doc in removed["id"])
    return together / strong.height, precise / max(1, removed.height)


def test_shingle_jaccard_equals_the_truth(spdx):
    docs, truth = spdx
    texts = dict(zip(docs["id"], docs["text"], strict=True))
    sample = truth.sort("a", "b").head(40)
    ids = sorted(set(sample["a"]) | set(sample["b"]))
    node = {doc: i for i, doc in enumerate(ids)}
    sh = minhash.shingle_hashes(pl.Series([texts[i] for i in ids]), 5)
    shingles = pl.DataFrame({"node": sh.doc, "sh": sh.hashes})
    pairs = pl.DataFrame({"a": [node[a] for a in sample["a"]], "b": [node[b] for b in sample["b"]]})
    ours = minhash.jaccard_of_pairs(shingles, pairs).to_numpy()
    assert np.allclose(ours, sample["jaccard"].to_numpy(), atol=1e-3)
    # and the independent Python definition agrees on one pair
    a, b = sample.row(0)[:2]
    sa, sb = truth_shingles(texts[a]), truth_shingles(texts[b])
    assert abs(len(sa & sb) / len(sa | sb) - ours[0]) < 1e-3


def test_short_texts_are_one_shingle_and_empty_texts_none():
    sh = minhash.shingle_hashes(pl.Series(["one two", "One, TWO!", "", None, "a b c d e f"]), 5)
    assert sh.tokens.tolist() == [2, 2, 0, 0, 6]
    assert sh.doc.tolist() == [0, 1, 4, 4]
    assert sh.hashes[0] == sh.hashes[1]  # same tokens after lower-casing → same shingle


def test_minhash_estimates_jaccard(spdx):
    docs, truth = spdx
    texts = dict(zip(docs["id"], docs["text"], strict=True))
    row = truth.filter(pl.col("jaccard").is_between(0.75, 0.9)).sort("a").row(0, named=True)
    sh = minhash.shingle_hashes(pl.Series([texts[row["a"]], texts[row["b"]]]), 5)
    _, sig = minhash.signatures(sh, 512, 7)  # the native kernel (rensa's R-MinHash)
    assert sig.shape == (2, 512) and sig.dtype == np.uint32
    assert abs((sig[0] == sig[1]).mean() - row["jaccard"]) < 0.08
    _, reference = minhash.signatures_numpy(sh, *minhash.permutations(512, 7))  # classic MinHash
    assert abs((reference[0] == reference[1]).mean() - row["jaccard"]) < 0.08
    # a set sketch: repeating and reordering shingles changes nothing; same seed, same values
    twice = minhash.Shingles(np.concatenate([sh.hashes[::-1], sh.hashes]),
                             np.concatenate([sh.doc[::-1], sh.doc]), sh.tokens)
    order = np.argsort(twice.doc, kind="stable")
    _, again = minhash.signatures(minhash.Shingles(twice.hashes[order], twice.doc[order], sh.tokens), 512, 7)
    assert np.array_equal(again, sig)


def test_bands_and_rows_are_derived_and_validated():
    assert dedup.bands_and_rows(dedup.Options()) == (16, 8)
    assert dedup.bands_and_rows(dedup.Options(threshold=0.9)) == (9, 14)
    assert dedup.bands_and_rows(dedup.Options(bands=32)) == (32, 4)
    with pytest.raises(ConfigError, match="num_perm"):
        validate_options(dedup.Options, {"bands": 20, "rows": 10}, "[dedup]")
    with pytest.raises(ConfigError, match="threshold"):
        validate_options(dedup.Options, {"threshold": 1.5}, "[dedup]")


def test_spdx_recall_and_precision_against_truth(spdx, spdx_input, tmp_path, local_engine):
    _, truth = spdx
    output = tmp_path / "unique"
    result = dedup.run([spdx_input], output, dedup.Options(), local_engine)
    removed = pl.read_parquet(tmp_path / "duplicates" / "*.parquet")
    kept = Dataset(output).scan().collect()
    recall, precision = recall_precision(removed, truth)
    assert recall >= 0.95, recall
    assert precision >= 0.98, precision
    assert result.rows_in == 728 == result.rows_out + sum(result.dropped.values())
    assert result.dropped["exact_duplicate"] == 29  # e.g. AGPL-3.0 = AGPL-3.0-only
    assert set(removed.columns) >= {"id", "text", "kept_id", "kind", "similarity", "reason"}
    assert set(removed["kept_id"]) <= set(kept["id"])
    near = removed.filter(pl.col("kind") == "near")
    # similarity is the true Jaccard to the kept document (a component can chain below 0.8)
    key = {tuple(sorted(p)): j for *p, j in truth.select("a", "b", "jaccard").iter_rows()}
    known = [(s, key[tuple(sorted((d, k)))]) for d, k, s in near.select("id", "kept_id", "similarity").iter_rows()
             if tuple(sorted((d, k))) in key]
    assert len(known) >= 0.9 * near.height
    assert all(abs(ours - theirs) < 1e-3 for ours, theirs in known)
    assert removed.filter(pl.col("kind") == "exact")["similarity"].to_list() == [1.0] * 29
    # near_group: the looser groups; a kept licence and its 0.5-similar siblings share one
    assert kept["near_group"].null_count() == 0
    assert kept["near_group"].n_unique() < kept.height
    assert set(kept["near_group"]) <= set(kept["id"])
    assert not (output / "_work").exists()


def test_dask_engine_same_bytes_and_resume(spdx_input, tmp_path, local_engine, dask_engine):
    options = dedup.Options(keep="longest", in_process_below=0)  # 0: on the Dask workers, however small
    local = dedup.run([spdx_input], tmp_path / "a" / "unique", options, local_engine)
    dist = dedup.run([spdx_input], tmp_path / "b" / "unique", options, dask_engine)
    assert local.rows_out == dist.rows_out and local.dropped == dist.dropped
    for name in ("unique", "duplicates"):
        ma = json.loads((tmp_path / "a" / name / "_manifest.json").read_text())
        mb = json.loads((tmp_path / "b" / name / "_manifest.json").read_text())
        assert ma["content_sha256"] == mb["content_sha256"], name
    again = dedup.run([spdx_input], tmp_path / "b" / "unique", options, dask_engine)
    assert again.skipped_tasks == 3 and again.rows_out == dist.rows_out
    # keep=longest: every removed near duplicate is no longer than what was kept
    removed = pl.read_parquet(tmp_path / "b" / "duplicates" / "*.parquet")
    kept = Dataset(tmp_path / "b" / "unique").scan().collect()
    lengths = dict(zip(kept["id"], kept["text"].str.extract_all(r"\w+").list.len(), strict=True))
    removed_len = removed["text"].str.extract_all(r"\w+").list.len()
    assert all(n <= lengths[k] for n, k in zip(removed_len, removed["kept_id"], strict=True))


def test_batches_bounded_by_bytes_give_the_same_result(spdx_input, tmp_path, local_engine):
    """Pass 1 cuts a shard into batches by documents and by text bytes; the cut changes memory,
    never the result (SPDX licences are ~5-30 KB: 20 KB batches hold one to four of them)."""
    lengths = np.array([5, 5, 5, 20, 1, 1, 1])
    assert batch_starts(lengths, 2, 10).tolist() == [0, 2, 4, 6]
    assert batch_starts(np.zeros(0, np.int64), 2, 10).tolist() == [0]  # empty shard: one batch
    assert batch_starts(np.array([100, 100, 100]), 2000, 10).tolist() == [0, 1, 2]
    default = dedup.run([spdx_input], tmp_path / "a" / "unique", dedup.Options(), local_engine)
    small = dedup.run([spdx_input], tmp_path / "b" / "unique", dedup.Options(batch_bytes=20_000), local_engine)
    assert small.dropped == default.dropped
    for name in ("unique", "duplicates"):
        ma = json.loads((tmp_path / "a" / name / "_manifest.json").read_text())
        mb = json.loads((tmp_path / "b" / name / "_manifest.json").read_text())
        assert ma["content_sha256"] == mb["content_sha256"], name


def test_exact_only_normalises_case_and_whitespace(tmp_path, local_engine):
    docs = pl.DataFrame({
        "id": ["a", "b", "c", "d"],
        "text": ["Hello   World\n", "hello world", "Hello there world", "HELLO\tWORLD"],
    })
    write_shard(docs, tmp_path / "in", "part-0.parquet")
    result = dedup.run([tmp_path / "in"], tmp_path / "unique", dedup.Options(near=False), local_engine)
    assert result.dropped == {"exact_duplicate": 2} and result.rows_out == 2
    removed = pl.read_parquet(tmp_path / "duplicates" / "*.parquet").sort("id")
    assert removed["id"].to_list() == ["b", "d"] and removed["kept_id"].to_list() == ["a", "a"]
    kept = pl.read_parquet(tmp_path / "unique" / "*.parquet")
    assert kept["near_group"].to_list() == kept["id"].to_list()


def test_cli_help_and_run(spdx_input, tmp_path):
    from pipeline.cli import cli

    runner = CliRunner()
    help_text = runner.invoke(cli, ["dedup", "--help"]).output
    for flag in ("--threshold", "--ngram", "--num-perm", "--bands", "--rows", "--verify / --no-verify",
                 "--keep", "--group-threshold", "--audit", "--exact / --no-exact"):
        assert flag in help_text
    audit = tmp_path / "audit"
    out = runner.invoke(cli, ["dedup", "--input", str(spdx_input), "--output", str(tmp_path / "u"),
                              "--audit", str(audit), "--threshold", "0.9", "--workers", "0"])
    assert out.exit_code == 0, out.output
    assert "16 bands" not in out.output  # 0.9 derives its own bands
    assert Dataset(audit).rows() > 29


def test_keep_scores():
    from pipeline.dedup.passes import _score

    sh = minhash.shingle_hashes(pl.Series(["a b c d e a b c d e", "a b c d e f"]), 5)
    assert _score("longest", sh, 2).tolist() == [10.0, 6.0]
    assert _score("best", sh, 2).tolist() == [5.0, 2.0]  # distinct shingles
    assert _score("first", sh, 2).tolist() == [0.0, 0.0]


def test_jaccard_of_sets_matches_python_sets():
    rng = np.random.default_rng(7)
    node = rng.integers(0, 40, 5000) * 3  # node ids with gaps; nodes 1, 2, ... have no shingles
    sh = rng.integers(0, 300, 5000).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # repeats
    a, b = rng.integers(0, 125, 400), rng.integers(0, 125, 400)
    a[:3], b[:3] = [0, 3, 1], [0, 1, 2]  # same node, one empty set, both empty
    sets = {n: set(sh[node == n].tolist()) for n in np.unique(node).tolist()}
    want = [len(sets.get(x, set()) & sets.get(y, set())) / max(1, len(sets.get(x, set()) | sets.get(y, set())))
            for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    got = minhash.jaccard_of_sets(node, sh, a, b, budget=500)  # small budget: many chunks
    assert got[0] == 1.0 and got[1] == 0.0 and got[2] == 0.0
    assert np.array_equal(got, np.array(want))


def test_verification_in_small_chunks_gives_the_same_result(spdx_input, tmp_path, local_engine, monkeypatch):
    """Verify reads the shingle sets of its pairs chunk by chunk (bounded by shingle rows); the
    chunking changes memory, never the similarities. 500 rows: about one SPDX licence per chunk."""
    from functools import partial

    from pipeline.dedup import passes

    options = dedup.Options(verify_margin=1.0)  # every candidate pair is verified
    default = dedup.run([spdx_input], tmp_path / "a" / "unique", options, local_engine)
    monkeypatch.setattr(passes, "pair_similarity", partial(passes.pair_similarity, max_shingles=500))
    small = dedup.run([spdx_input], tmp_path / "b" / "unique", options, local_engine)
    assert default.details["verified_pairs"] > 0 and small.dropped == default.dropped
    for name in ("unique", "duplicates"):
        ma = json.loads((tmp_path / "a" / name / "_manifest.json").read_text())
        mb = json.loads((tmp_path / "b" / name / "_manifest.json").read_text())
        assert ma["content_sha256"] == mb["content_sha256"], name


def test_noop_resume_keeps_the_manifest_details(spdx_input, tmp_path, local_engine):
    """#17 item 10: a second run with nothing left to do rewrote unique/_manifest.json with only
    the band numbers, so the report showed candidate_edges, duplicate_groups, ... as null."""
    first = dedup.run([spdx_input], tmp_path / "unique", dedup.Options(), local_engine)
    before = json.loads((tmp_path / "unique" / "_manifest.json").read_text())["extra"]
    again = dedup.run([spdx_input], tmp_path / "unique", dedup.Options(), local_engine)
    after = json.loads((tmp_path / "unique" / "_manifest.json").read_text())["extra"]
    assert again.skipped_tasks == 3
    assert before["candidate_edges"] > 0 and before["duplicate_groups"] > 0
    assert after == before
    for key in ("candidate_edges", "verified_pairs", "edges_kept", "duplicate_groups", "near_groups", "text_bytes"):
        assert again.details[key] == first.details[key], key


def test_small_input_runs_on_threads_without_starting_a_cluster(spdx_input, tmp_path, local_engine):
    """Below in_process_below bytes of text an idle local engine starts no Dask cluster: the
    tasks run on threads here, and the output is byte-identical to the in-process run's."""
    from pipeline.engine import Engine

    threaded_engine = Engine(workers=2, progress=False)
    runner = dedup.tasks_runner(threaded_engine, dedup.shard_bytes(sorted(spdx_input.glob("*.parquet"))), dedup.Options())
    assert isinstance(runner, dedup.ThreadedTasks) and runner.threads == 2
    assert sum(dedup.shard_bytes(sorted(spdx_input.glob("*.parquet")))) > 4_000_000  # the licences
    threaded = dedup.run([spdx_input], tmp_path / "a" / "unique", dedup.Options(), threaded_engine)
    assert threaded_engine.client is None  # no cluster was started
    serial = dedup.run([spdx_input], tmp_path / "b" / "unique", dedup.Options(), local_engine)
    assert threaded.dropped == serial.dropped
    for name in ("unique", "duplicates"):
        ma = json.loads((tmp_path / "a" / name / "_manifest.json").read_text())
        mb = json.loads((tmp_path / "b" / name / "_manifest.json").read_text())
        assert ma["content_sha256"] == mb["content_sha256"], name
    from pipeline.engine import ShardError

    with pytest.raises(ShardError, match="shard-b"):  # a failure names its shard, as on the engine
        runner.map(lambda x: 1 // x, [1, 0, 2], labels=["shard-a", "shard-b", "shard-c"])
    assert runner.map(lambda x: 10 * x, [3, 1, 2]) == [30, 10, 20]  # in the order of the items
    small = dedup.Options(in_process_below=1000)
    assert dedup.tasks_runner(threaded_engine, dedup.shard_bytes(sorted(spdx_input.glob("*.parquet"))), small) is threaded_engine


def test_partition_count_changes_no_byte(spdx_input, tmp_path, local_engine):
    """Band rows are spread over partitions by a hash of (band, key); a bucket never straddles
    two, and verify merges and sorts the edges, so 2 or 31 partitions give the same output."""
    default = dedup.run([spdx_input], tmp_path / "a" / "unique", dedup.Options(), local_engine)
    many = dedup.run([spdx_input], tmp_path / "b" / "unique", dedup.Options(partition_rows=1000), local_engine)
    assert default.details["partitions"] == 2 and many.details["partitions"] > 20
    for name in ("unique", "duplicates"):
        ma = json.loads((tmp_path / "a" / name / "_manifest.json").read_text())
        mb = json.loads((tmp_path / "b" / name / "_manifest.json").read_text())
        assert ma["content_sha256"] == mb["content_sha256"], name


def test_resume_reuses_the_stored_signatures_and_redoes_a_damaged_store(spdx_input, tmp_path, local_engine,
                                                                         monkeypatch):
    """Pass 1 keeps signatures and shingle sets as .npy arrays under _work; a run that dies in
    the write pass resumes from them (no shard is signed again), except a shard whose store was
    cut short (its size no longer matches the record), and the result is byte-identical."""
    from pipeline.dedup import passes
    from pipeline.errors import ShardError

    clean = dedup.run([spdx_input], tmp_path / "clean" / "unique", dedup.Options(), local_engine)
    real_write = passes.pass3_shard

    def dies_on_shard_1(args):
        if args[1] == 1:
            raise RuntimeError("killed")
        return real_write(args)

    monkeypatch.setattr(dedup, "pass3_shard", dies_on_shard_1)
    with pytest.raises(ShardError):
        dedup.run([spdx_input], tmp_path / "b" / "unique", dedup.Options(), local_engine)
    work = tmp_path / "b" / "unique" / "_work"
    stores = sorted((work / "shingles").glob("s=*.npy")) + sorted((work / "sig").glob("s=*.npy"))
    assert [p.name for p in stores] == ["s=00000.npy", "s=00000.offsets.npy", "s=00001.npy", "s=00001.offsets.npy",
                                        "s=00002.npy", "s=00002.offsets.npy", "s=00000.npy", "s=00001.npy", "s=00002.npy"]
    assert np.load(work / "sig" / "s=00000.npy").shape == (250, 128)
    offsets = np.load(work / "shingles" / "s=00002.offsets.npy")  # 228 licences: row r is [r, r + 1)
    assert offsets.shape == (229,) and offsets[-1] == np.load(work / "shingles" / "s=00002.npy").size
    damaged = work / "shingles" / "s=00002.npy"
    damaged.write_bytes(damaged.read_bytes()[:-800])  # shard 2's shingle store is cut short

    signed = []
    monkeypatch.setattr(dedup, "pass3_shard", real_write)
    monkeypatch.setattr(dedup, "pass1_shard", lambda args: signed.append(args[1]) or passes.pass1_shard(args))
    again = dedup.run([spdx_input], tmp_path / "b" / "unique", dedup.Options(), local_engine)
    assert signed == [2]  # only the shard whose store was damaged is signed again
    assert again.rows_out == clean.rows_out and again.dropped == clean.dropped
    for name in ("unique", "duplicates"):
        ma = json.loads((tmp_path / "clean" / name / "_manifest.json").read_text())
        mb = json.loads((tmp_path / "b" / name / "_manifest.json").read_text())
        assert ma["content_sha256"] == mb["content_sha256"], name


def test_a_later_shard_without_a_column_fails_before_any_work(tmp_path, local_engine):
    """Every distinct shard schema is checked up front, not only the first shard's: a shard
    that lacks `text` is named in the error and nothing is written."""
    from pipeline.errors import InputError

    root = tmp_path / "clean"
    write_shard(pl.DataFrame({"id": ["a", "b"], "text": ["one two", "three four"]}), root, "part-0.parquet")
    write_shard(pl.DataFrame({"id": ["c"], "body": ["five six"]}), root, "part-1.parquet")
    with pytest.raises(InputError) as info:
        dedup.run([root], tmp_path / "unique", dedup.Options(), local_engine)
    assert "part-1.parquet" in str(info.value) and "text" in str(info.value)
    assert not (tmp_path / "unique").exists() or not list((tmp_path / "unique").glob("*.parquet"))
