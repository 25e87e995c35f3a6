"""decontaminate on the real GSM8K data: test problems planted in train (case, whitespace, line
breaks and punctuation changed) are all found, against a plain-Python reference of the rule."""

from __future__ import annotations

import gzip
import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xxhash

from pipeline.dataset import Dataset, write_shard
from pipeline.decontaminate import EvalSet, Options, parse_eval_set
from pipeline.decontaminate import run as run_decontaminate
from pipeline.decontaminate.evalsets import EvalSetError
from pipeline.decontaminate.ngrams import contains, windows
from pipeline.dedup.minhash import splitmix64

N = 13
PLANTED = 60
VAL_COPIES = 5


def reference_tokens(text: str) -> list[str]:
    """The documented normalisation, written independently: NFKC, lower case, \\w+ runs."""
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())


def reference_grams(text: str | None, n: int = N) -> set[tuple[str, ...]]:
    tokens = reference_tokens(text or "")
    if not tokens:
        return set()
    if len(tokens) < n:
        return {tuple(tokens)}
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def disguise(text: str, k: int) -> str:
    """A test problem as someone might paste it: case, spacing, line breaks, punctuation."""
    variants = [
        lambda t: t.upper(),
        lambda t: re.sub(r" ", "  \n ", t),
        lambda t: "\t" + t.replace(", ", " ,\r\n").replace(".", " . "),
        lambda t: t.title().replace(" ", "\u00a0"),  # NFKC turns the no-break space into a space
        lambda t: "Question:\n\n" + t.lower().replace("?", "??") + "\nThink step by step.",
    ]
    return variants[k % len(variants)](text)


def read_jsonl(path: Path) -> pl.DataFrame:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return pl.DataFrame([json.loads(line) for line in handle])


def as_instructions(frame: pl.DataFrame, prefix: str, split: str) -> pl.DataFrame:
    return frame.select(
        pl.format(prefix + "{}", pl.int_range(pl.len())).alias("id"),
        pl.lit("gsm8k").alias("source"),
        pl.lit("instruction").alias("kind"),
        pl.col("question").alias("prompt"),
        pl.col("answer").alias("response"),
        pl.lit(split).alias("split"),
    )


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory):
    """splits/{train,val,test} from GSM8K train, with GSM8K test problems and val rows planted."""
    folder = shared_data / "instruct"
    gsm_train, gsm_test = read_jsonl(folder / "gsm8k_train.jsonl.gz"), read_jsonl(folder / "gsm8k_test.jsonl.gz")
    clean = as_instructions(gsm_train.slice(0, 6000), "train-", "train")
    val = as_instructions(gsm_train.slice(6000, 700), "val-", "val")
    test = as_instructions(gsm_train.slice(6700, 700), "test-", "test")
    picked = gsm_test.slice(100, PLANTED)
    planted = pl.DataFrame({
        "id": [f"planted-{k}" for k in range(PLANTED)],
        "source": "gsm8k", "kind": "instruction",
        "prompt": [disguise(q, k) for k, q in enumerate(picked["question"])],
        "response": picked["answer"], "split": "train",
    })
    from_val = val.head(VAL_COPIES).select(
        pl.format("copied-val-{}", pl.int_range(pl.len())).alias("id"), "source", "kind",
        pl.col("prompt").str.to_lowercase().str.replace_all(r"\s+", "\n"), "response", pl.lit("train").alias("split"))
    train = pl.concat([clean, planted, from_val]).sample(fraction=1.0, shuffle=True, seed=7)
    root = tmp_path_factory.mktemp("decontam") / "splits"
    for j, part in enumerate(train.iter_slices(2500)):
        write_shard(part, root, f"train/part-{j:05d}.parquet")
    write_shard(val, root, "val/part-00000.parquet")
    write_shard(test, root, "test/part-00000.parquet")
    eval_path = folder / "gsm8k_test.jsonl.gz"
    # the reference: which train rows share a 13-gram (or, under 13 tokens, all tokens) with
    # a GSM8K test question, or with any val/test prompt or response
    test_grams = set().union(*(reference_grams(q) for q in gsm_test["question"]))
    own = {s: set().union(*(reference_grams(t) for t in f["prompt"].to_list() + f["response"].to_list()))
           for s, f in (("val", val), ("test", test))}
    expected: dict[str, set[str]] = {"gsm8k_test": set(), "val": set(), "test": set()}
    for row in train.iter_rows(named=True):
        grams = reference_grams(row["prompt"]) | reference_grams(row["response"])
        for name, target in (("gsm8k_test", test_grams), *own.items()):
            if grams & target:
                expected[name].add(row["id"])
    return root, eval_path, train, val, test, expected


def run_stage(corpus, tmp_path: Path, engine, **options):
    root, eval_path = corpus[0], corpus[1]
    opts = Options(eval_sets=[EvalSet(name="gsm8k_test", path=str(eval_path), fields=["question"])], **options)
    out = tmp_path / "decontaminated"
    return run_decontaminate([root], out, opts, engine), out


def test_drop_finds_every_planted_problem_and_nothing_else(corpus, tmp_path, local_engine):
    root, _, train, val, test, expected = corpus
    result, out = run_stage(corpus, tmp_path, local_engine)
    rejected = Dataset(tmp_path / "rejected" / "decontaminated").scan().collect()
    kept = Dataset(out).scan().collect()
    found = set(rejected["id"])
    planted = {f"planted-{k}" for k in range(PLANTED)} | {f"copied-val-{k}" for k in range(VAL_COPIES)}
    assert planted <= found  # every disguised test problem and copied val row
    assert found == set().union(*expected.values())  # and no clean row beyond the reference's
    # GSM8K's own train/test overlap is real: a few train problems share a 13-gram with test
    assert expected["gsm8k_test"] - planted and len(expected["gsm8k_test"] - planted) < 20
    counts = {name: b["contaminated_train_rows"] for name, b in result.details["benchmarks"].items()}
    assert counts == {name: len(ids) for name, ids in expected.items()}
    assert result.details["benchmarks"]["gsm8k_test"]["rows"] == 1319
    # the reason names the first set that matched, the n-gram is one the reference finds
    first = rejected.filter(pl.col("id") == "planted-0").row(0, named=True)
    assert first["reason"] == "contaminated:gsm8k_test" and first["contaminated_by"] == ["gsm8k_test"]
    assert len(first["matched_ngram"].split()) == N
    assert tuple(first["matched_ngram"].split()) in reference_grams(first["prompt"])
    assert result.dropped == dict(rejected.group_by("reason").len().iter_rows())
    assert result.rows_in == result.rows_out + rejected.height == train.height + val.height + test.height
    # val and test pass through unchanged, shard for shard; train keeps its layout
    for split, frame in (("val", val), ("test", test)):
        assert pl.read_parquet(out / split / "part-00000.parquet").equals(frame)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    assert kept.filter(pl.col("split") == "train").height == train.height - len(found)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["extra"]["benchmarks"]["gsm8k_test"]["contaminated_train_rows"] == len(expected["gsm8k_test"])


def test_flag_keeps_every_row_and_marks_the_same_ones(corpus, tmp_path, dask_engine):
    _, _, train, val, test, expected = corpus
    result, out = run_stage(corpus, tmp_path, dask_engine, mode="flag")
    frame = Dataset(out).scan().collect()
    assert frame.height == train.height + val.height + test.height and result.dropped == {}
    flagged = frame.filter(pl.col("contaminated").fill_null(False))
    assert set(flagged["id"]) == set().union(*expected.values())
    by = {r["id"]: set(r["contaminated_by"]) for r in flagged.iter_rows(named=True)}
    for name, ids in expected.items():
        assert {i for i, sets in by.items() if name in sets} == ids
    clean = frame.filter(pl.col("split") == "train", ~pl.col("contaminated"))
    assert clean["contaminated_by"].list.len().max() == 0
    # val/test rows were not checked: null flags, every other column as it was
    others = frame.filter(pl.col("split") != "train")
    assert others["contaminated"].null_count() == others.height
    assert others.drop("contaminated", "contaminated_by").sort("id").equals(pl.concat([val, test]).sort("id"))


def test_rerun_resumes_with_the_same_bytes(corpus, tmp_path, local_engine):
    first, out = run_stage(corpus, tmp_path, local_engine, own_splits=False)
    before = json.loads((out / "_manifest.json").read_text())["content_sha256"]
    again, _ = run_stage(corpus, tmp_path, local_engine, own_splits=False)
    assert again.skipped_tasks == len(list(out.rglob("*.parquet"))) and again.rows_out == first.rows_out
    assert json.loads((out / "_manifest.json").read_text())["content_sha256"] == before
    assert set(first.details["benchmarks"]) == {"gsm8k_test"}
    # a run killed before one shard was written: only that shard is redone, the sets are reused
    lost = sorted(out.rglob("train/*.parquet"))[1]
    lost.unlink()
    built = (out / "_eval" / "gsm8k_test.npy").stat().st_mtime_ns
    resumed, _ = run_stage(corpus, tmp_path, local_engine, own_splits=False)
    assert resumed.skipped_tasks == again.skipped_tasks - 1 and lost.exists()
    assert (out / "_eval" / "gsm8k_test.npy").stat().st_mtime_ns == built
    assert json.loads((out / "_manifest.json").read_text())["content_sha256"] == before
    assert resumed.details["benchmarks"] == first.details["benchmarks"]


def test_window_hashes_are_the_documented_formula():
    w = windows(pl.Series(["One, two;\nTHREE four", "five"]), 3)
    tokens = ["one", "two", "three", "four", "five"]
    t = [xxhash.xxh64_intdigest(x.encode()) for x in tokens]
    p = 0x9E3779B97F4A7C15

    def key(values: list[int]) -> int:
        raw = sum(v * p**j for j, v in enumerate(values)) + len(values) * 0xC2B2AE3D27D4EB4F
        return int(splitmix64(np.array([raw % 2**64], np.uint64))[0])

    assert w.hashes.tolist() == [key(t[0:3]), key(t[1:4]), key(t[4:5])]
    assert w.text_of(np.array([1, 2])) == ["two three four", "five"]
    assert w.unit.tolist() == [0, 0, 1]


def test_short_texts_match_whole_and_chat_turns_are_checked(tmp_path, local_engine):
    rows = pl.DataFrame({
        "id": ["short-same", "short-inside", "chat", "clean"],
        "kind": ["text", "text", "chat", "text"],
        "text": ["What is 2 + 2?", "so what is 2 + 2 then", None, "nothing to see here"],
        "messages": [None, None, [{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "The Capital of France is PARIS."}], None],
        "split": "train",
    })
    write_shard(rows, tmp_path / "in", "train/part-00000.parquet")
    evals = tmp_path / "evals.jsonl"
    evals.write_text(json.dumps({"q": "what is 2+2"}) + "\n" + json.dumps({"q": "the capital of france is paris"}) + "\n")
    result = run_decontaminate([tmp_path / "in"], tmp_path / "out", Options(
        eval_set=[f"tiny={evals}@q"], own_splits=False, mode="flag"), local_engine)
    flags = dict(Dataset(tmp_path / "out").scan().select("id", "contaminated").collect().iter_rows())
    # under n tokens an eval text matches only a text with exactly its tokens
    assert flags == {"short-same": True, "short-inside": False, "chat": True, "clean": False}
    assert result.details["benchmarks"]["tiny"]["contaminated_train_rows"] == 2


def test_bad_eval_sets_are_named(tmp_path, local_engine):
    write_shard(pl.DataFrame({"id": ["a"], "text": ["x"]}), tmp_path / "in", "part-00000.parquet")
    evals = tmp_path / "evals.jsonl"
    evals.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(Exception, match=r"evals\.jsonl.*no field 'prompt'"):
        run_decontaminate([tmp_path / "in"], tmp_path / "out", Options(eval_set=[f"b={evals}@prompt"]), local_engine)
    with pytest.raises(EvalSetError, match="no readable file matches"):
        run_decontaminate([tmp_path / "in"], tmp_path / "out2", Options(eval_set=[f"b={tmp_path}/nope*.jsonl"]),
                          local_engine)
    with pytest.raises(ValueError, match="name of our own split"):
        parse_eval_set("val=x.jsonl")
    assert parse_eval_set("g=a/b.jsonl.gz@question,answer").fields == ["question", "answer"]


def test_contains_on_a_memory_map(tmp_path):
    values = np.unique(np.random.default_rng(0).integers(0, 2**63, 10_000, dtype=np.uint64))
    np.save(tmp_path / "set.npy", values)
    mapped = np.load(tmp_path / "set.npy", mmap_mode="r")
    queries = np.concatenate([values[::7], values[::7] + np.uint64(1), np.array([0, 2**64 - 1], np.uint64)])
    assert contains(mapped, queries).tolist() == np.isin(queries, values).tolist()


def test_set_built_in_buckets_equals_one_bucket(shared_data, tmp_path, local_engine, monkeypatch):
    """The eval set merged from many hash-range buckets is the same sorted set as from one."""
    from pipeline.decontaminate import evalsets

    sources = [shared_data / "instruct" / "gsm8k_test.jsonl.gz", shared_data / "instruct" / "gsm8k_train.jsonl.gz"]
    whole = evalsets.build_set(local_engine, "one", sources, ["question"], N, tmp_path)
    monkeypatch.setattr(evalsets, "BUCKET_HASHES", 10_000)
    cut = evalsets.build_set(local_engine, "many", sources, ["question"], N, tmp_path)
    one, many = np.load(tmp_path / "one.npy"), np.load(tmp_path / "many.npy")
    assert whole == cut and whole["rows"] == 1319 + 7473 and len(one) == whole["ngrams"] > 100_000
    assert np.array_equal(one, many) and np.all(one[1:] > one[:-1])  # sorted, unique
    assert not (tmp_path / "_parts").exists() or not any((tmp_path / "_parts").iterdir())


def test_numbers_zero_matches_a_problem_with_new_numbers(tmp_path, local_engine):
    # a number at least every 12 words: every 13-gram holds one, so new numbers hide the copy
    # unless numbers count as 0
    question = ("Tom has 5 apples and buys 7 more at the shop, then he gives 2 to Ann and eats 1 "
                "before lunch, so he keeps 3.5 for the 4 kids.")
    renumbered = question.replace("5 apples", "8 apples").replace("7", "9").replace("2 to", "6 to") \
        .replace("eats 1", "eats 2").replace("3.5", "4,5").replace("the 4", "the 11")
    rows = pl.DataFrame({"id": ["renumbered", "other"], "split": "train",
                         "text": [renumbered, "A robe takes 2 bolts of blue fiber and half that much white fiber."]})
    write_shard(rows, tmp_path / "in", "train/part-00000.parquet")
    evals = tmp_path / "evals.jsonl"
    evals.write_text(json.dumps({"question": question}) + "\n")
    flags = {}
    for numbers in ("keep", "zero"):
        run_decontaminate([tmp_path / "in"], tmp_path / numbers, Options(
            eval_set=[f"gsm={evals}@question"], own_splits=False, mode="flag", numbers=numbers), local_engine)
        flags[numbers] = dict(Dataset(tmp_path / numbers).scan().select("id", "contaminated").collect().iter_rows())
    assert flags == {"keep": {"renumbered": False, "other": False}, "zero": {"renumbered": True, "other": False}}
