"""The split stage on the real labelled corpora: quotas, groups, time, balance, export, resume."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline import split
from pipeline.cli import cli
from pipeline.dataset import MANIFEST, Dataset, input_fingerprint
from pipeline.schema import rejected_folder
from pipeline.split.export import read_encrypted

SPLITS = ("train", "val", "test")


def run_split(inputs: Path, output: Path, engine, **options) -> split.StageResult:
    return split.run([inputs], output, split.Options(**options), engine)


def read_splits(output: Path) -> pl.DataFrame:
    return pl.read_parquet(str(output / "*" / "part-*.parquet"))


def exported(output: Path) -> dict:
    return json.loads((output / "manifest.json").read_text())


def shard_digests(output: Path) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in exported(output)["files"]}


def test_stratified_split_meets_every_class_quota_to_one_row(rotten_docs, tmp_path, local_engine):
    out = tmp_path / "splits"
    result = run_split(rotten_docs, out, local_engine, stratify="label", shard_rows=4000)
    rows = read_splits(out)
    assert rows.height == result.rows_in == result.rows_out == 13_905
    counts = {(s, c): n for s, c, n in rows.group_by("split", "label").len().iter_rows()}
    classes = {"fresh": 7403, "rotten": 5405, "plot": 1097}
    for cls, total in classes.items():
        assert sum(counts[(s, cls)] for s in SPLITS) == total
        for split_name, share in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
            assert abs(counts[(split_name, cls)] - total * share) < 1
    # every row exactly once: no id in two splits, none lost
    assert rows["id"].n_unique() == rows.height
    source_ids = pl.read_parquet(str(rotten_docs / "*.parquet"))["id"]
    assert set(rows["id"]) == set(source_ids)
    # the manifest says the same, and every shard but the last of a split has shard_rows rows
    manifest = exported(out)
    assert manifest["counts"]["train"]["classes"] == {"fresh": 5923, "plot": 877, "rotten": 4324}
    assert manifest["summary"]["max_quota_deviation"] < 1
    train = [f for f in manifest["files"] if f["split"] == "train"]
    assert [f["rows"] for f in sorted(train, key=lambda f: f["path"])] == [4000, 4000, 3124]
    # each folder holds only its own split
    for name in SPLITS:
        assert set(pl.read_parquet(str(out / name / "*.parquet"))["split"]) == {name}


def test_group_split_keeps_every_movie_on_one_side_and_reports_the_deviation(
        rotten_docs, tmp_path, local_engine):
    out = tmp_path / "splits"
    run_split(rotten_docs, out, local_engine, stratify="label", group="near_group")
    rows = read_splits(out)
    assert rows.height == 13_905 and rows["id"].n_unique() == 13_905
    sides = rows.group_by("near_group").agg(pl.col("split").n_unique())
    assert sides["split"].max() == 1
    manifest = exported(out)
    # the reported deviation is the real one: recompute it from the rows
    for cls, per_split in manifest["quotas"].items():
        total = rows.filter(pl.col("label") == cls).height
        for name, share in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
            actual = rows.filter((pl.col("label") == cls) & (pl.col("split") == name)).height
            assert per_split[name]["actual"] == actual
            assert per_split[name]["deviation"] == pytest.approx(actual - total * share, abs=1e-6)
    # every row sits in a movie of mixed classes, yet the greedy placement of whole movies keeps
    # every class within 2 rows of its quota (scikit-learn's StratifiedGroupKFold: 2.0, see bench)
    assert rows.group_by("near_group").len()["len"].max() > 20
    assert manifest["summary"]["max_quota_deviation"] <= 2
    for name, share in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
        assert abs(manifest["counts"][name]["rows"] - 13_905 * share) <= 2


def test_group_split_balances_train_exactly_by_each_rows_own_class(rotten_docs, tmp_path, local_engine):
    plain, under = tmp_path / "plain", tmp_path / "under"
    run_split(rotten_docs, plain, local_engine, stratify="label", group="near_group")
    run_split(rotten_docs, under, local_engine, stratify="label", group="near_group", balance="undersample")
    for name in ("val", "test"):
        path = f"{name}/part-00000.parquet"
        assert shard_digests(plain)[path] == shard_digests(under)[path]
    train = read_splits(under).filter(pl.col("split") == "train")
    # exact per class, by each row's own class, although movies mix classes
    assert exported(under)["balance"]["train_before"] == {"fresh": 5923, "plot": 877, "rotten": 4324}
    assert dict(train.group_by("label").len().iter_rows()) == {"fresh": 877, "plot": 877, "rotten": 877}
    # no movie in train shows up in val or test
    held_out = set(read_splits(under).filter(pl.col("split") != "train")["near_group"])
    assert not held_out & set(train["near_group"])


def test_same_input_and_seed_give_byte_identical_shards_on_dask_and_locally(
        sms_docs, tmp_path, local_engine, dask_engine):
    options = {"stratify": "label", "group": "id", "balance": "oversample", "shard_rows": 1500, "seed": 7}
    run_split(sms_docs, tmp_path / "a", dask_engine, **options)
    run_split(sms_docs, tmp_path / "b", local_engine, **options)
    first, second = shard_digests(tmp_path / "a"), shard_digests(tmp_path / "b")
    assert first == second and len(first) == 8
    for path, digest in first.items():
        assert split.export.file_sha256(tmp_path / "b" / path) == digest
    # another seed moves rows between splits
    run_split(sms_docs, tmp_path / "c", local_engine, **{**options, "seed": 8})
    assert set(read_splits(tmp_path / "c").filter(pl.col("split") == "test")["id"]) != set(
        read_splits(tmp_path / "a").filter(pl.col("split") == "test")["id"])


def test_undersampling_changes_train_only(sms_docs, tmp_path, local_engine):
    plain, under = tmp_path / "plain", tmp_path / "under"
    run_split(sms_docs, plain, local_engine, stratify="label")
    result = run_split(sms_docs, under, local_engine, stratify="label", balance="undersample")
    train = read_splits(under).filter(pl.col("split") == "train")
    assert dict(train.group_by("label").len().iter_rows()) == {"ham": 597, "spam": 597}
    assert not train["oversampled"].any()
    # val and test are the very same files as without balancing
    for name in ("val", "test"):
        path = f"{name}/part-00000.parquet"
        assert shard_digests(plain)[path] == shard_digests(under)[path]
    # the dropped train rows are in rejected/, with their reason, and counted
    dropped = pl.read_parquet(str(rejected_folder(under) / "*.parquet"))
    assert dropped.height == 3861 - 597 == result.dropped["undersampled"]
    assert set(dropped["reason"]) == {"undersampled"} and set(dropped["label"]) == {"ham"}
    assert not set(dropped["id"]) & set(train["id"])


def test_oversampling_marks_its_copies(sms_docs, tmp_path, local_engine):
    out = tmp_path / "over"
    result = run_split(sms_docs, out, local_engine, stratify="label", balance="oversample")
    rows = read_splits(out)
    train = rows.filter(pl.col("split") == "train")
    assert dict(train.group_by("label").len().iter_rows()) == {"ham": 3861, "spam": 3861}
    copies = train.filter(pl.col("oversampled"))
    assert copies.height == 3861 - 597 and set(copies["label"]) == {"spam"}
    # every copy repeats an original train row; originals are unique
    originals = train.filter(~pl.col("oversampled"))
    assert originals["id"].n_unique() == originals.height == 3861 + 597
    assert set(copies["id"]) <= set(originals["id"])
    assert not rows.filter(pl.col("split") != "train")["oversampled"].any()
    assert result.rows_out == 5574 + copies.height
    assert exported(out)["counts"]["train"]["oversampled"] == copies.height


def test_target_distribution_with_a_cap(rotten_docs, tmp_path, local_engine):
    out = tmp_path / "target"
    run_split(rotten_docs, out, local_engine, stratify="label", balance="target",
              target="fresh=0.4,rotten=0.4,plot=0.2", max_per_class=3000)
    train = read_splits(out).filter(pl.col("split") == "train")
    # train has 11,124 rows: 4,449.6 / 4,449.6 / 2,224.8 → capped at 3,000; plot 877 → 2,225
    assert dict(train.group_by("label").len().iter_rows()) == {"fresh": 3000, "rotten": 3000, "plot": 2225}
    with pytest.raises(ValueError, match="plot"):
        run_split(rotten_docs, tmp_path / "bad", local_engine, stratify="label", balance="target",
                  target="fresh=0.5,rotten=0.5")


def test_time_split_puts_train_before_val_before_test(rotten_docs, tmp_path, local_engine):
    out = tmp_path / "time"
    run_split(rotten_docs, out, local_engine, time_col="fetched_at")
    spans = {s: (lo, hi, n) for s, lo, hi, n in read_splits(out).group_by("split").agg(
        pl.col("fetched_at").min().alias("lo"), pl.col("fetched_at").max().alias("hi"), pl.len()).iter_rows()}
    assert spans["train"][1] <= spans["val"][0] and spans["val"][1] <= spans["test"][0]
    # exact sizes even though ~28 rows share every timestamp
    assert [spans[s][2] for s in SPLITS] == [11_124, 1_391, 1_390]


def test_random_split_and_empty_split(sms_docs, tmp_path, local_engine):
    out = tmp_path / "random"
    run_split(sms_docs, out, local_engine, ratios="0.9,0.1,0")
    manifest = exported(out)
    assert {s: manifest["counts"][s]["rows"] for s in SPLITS} == {"train": 5017, "val": 557, "test": 0}
    # an empty split still has one (empty) shard with the schema, so loaders find it
    empty = pl.read_parquet(out / "test" / "part-00000.parquet")
    assert empty.height == 0 and "text" in empty.columns


def test_tiny_input_with_rare_classes_null_labels_and_groups(tmp_path, local_engine):
    docs = pl.DataFrame({
        "id": [f"d{i}" for i in range(9)],
        "text": [f"text {i}" for i in range(9)],
        "label": ["a", "a", "a", "a", "b", "b", "c", None, None],
        "near_group": ["g1", "g1", None, None, "g2", None, None, None, "g3"],
    })
    root = tmp_path / "docs"
    root.mkdir()
    docs.write_parquet(root / "part-00000.parquet")
    result = run_split(root, tmp_path / "splits", local_engine, stratify="label", group="near_group")
    rows = read_splits(tmp_path / "splits")
    assert rows.height == result.rows_out == 9 and rows["id"].n_unique() == 9
    assert rows.filter(pl.col("near_group") == "g1")["split"].n_unique() == 1
    manifest = exported(tmp_path / "splits")
    assert "__null__" in manifest["quotas"]
    # the one-row class c cannot be cut: it goes to train (largest share)
    assert rows.filter(pl.col("label") == "c")["split"].to_list() == ["train"]


def test_manifests_checksums_verify_and_tampering_is_caught(sms_docs, tmp_path, local_engine):
    out = tmp_path / "splits"
    run_split(sms_docs, out, local_engine, stratify="label", jsonl=True, shard_rows=2000)
    manifest = exported(out)
    assert {f["format"] for f in manifest["files"]} == {"parquet", "jsonl"}
    assert manifest["seed"] == 42 and manifest["options"]["stratify"] == "label"
    assert manifest["input_fingerprint"] == input_fingerprint([sms_docs])
    assert split.verify(out) == []
    jsonl = pl.read_ndjson(out / "val" / "part-00000.jsonl")
    assert jsonl.height == 558 and set(jsonl["split"]) == {"val"}
    # the dataset-layer manifest lists the Parquet shards the report and resume read
    dataset = Dataset(out)
    assert dataset.rows() == 5574
    assert sorted(s.relative_to(out).as_posix() for s in dataset.shard_paths())[0] == "test/part-00000.parquet"
    # flip one byte: verify names the file
    victim = out / "train" / "part-00001.parquet"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert split.verify(out) == ["train/part-00001.parquet: SHA-256 differs from the manifest"]


def test_rerun_with_same_options_skips_work_and_new_options_redo_it(sms_docs, tmp_path, local_engine):
    out = tmp_path / "splits"
    run_split(sms_docs, out, local_engine, stratify="label")
    shard = out / "train" / "part-00000.parquet"
    before = shard.stat().st_mtime_ns
    again = run_split(sms_docs, out, local_engine, stratify="label")
    assert again.skipped_tasks == 3 and shard.stat().st_mtime_ns == before
    assert again.rows_out == 5574
    changed = run_split(sms_docs, out, local_engine, stratify="label", ratios="0.5,0.25,0.25")
    assert changed.skipped_tasks == 0
    assert exported(out)["counts"]["train"]["rows"] == 2786
    assert json.loads((out / MANIFEST).read_text())["options"]["ratios"] == "0.5,0.25,0.25"


def test_encryption_covers_shards_and_undersampled_rows_and_files_follow_the_umask(sms_docs, tmp_path,
                                                                                  local_engine):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"footer": base64.b64encode(os.urandom(32)).decode(),
                                "columns": base64.b64encode(os.urandom(16)).decode()}))
    os.chmod(keys, 0o644)
    with pytest.raises(ValueError, match="(?s)encrypt_key_file.*chmod 600"):
        split.Options(stratify="label", encrypt_key_file=keys)  # refused when the options load
    os.chmod(keys, 0o600)
    out = tmp_path / "enc"
    previous = os.umask(0o022)
    try:
        result = run_split(sms_docs, out, local_engine, stratify="label", balance="undersample",
                           encrypt_key_file=keys)
    finally:
        os.umask(previous)
    assert result.dropped == {"undersampled": 3862 - 598}
    shard = out / "val" / "part-00000.parquet"
    # one permission policy: the umask (a trainer running as another user can read the splits)
    assert stat.S_IMODE(shard.stat().st_mode) == 0o644
    assert stat.S_IMODE((out / "val").stat().st_mode) == 0o755
    with pytest.raises(Exception, match="(?i)encrypt|decrypt"):
        pl.read_parquet(shard)
    table = read_encrypted(shard, keys)
    assert table.num_rows == 558 and set(table.column("split").to_pylist()) == {"val"}
    assert split.verify(out) == []
    assert exported(out)["files"][0]["encrypted"] is True
    # the undersampled rows are the same texts: encrypted as well, and the manifests say so
    rejected = sorted(rejected_folder(out).glob("*.parquet"))
    assert rejected
    for path in rejected:
        with pytest.raises(Exception, match="(?i)encrypt|decrypt"):
            pl.read_parquet(path)
    assert sum(read_encrypted(p, keys).num_rows for p in rejected) == 3862 - 598
    assert json.loads((rejected_folder(out) / MANIFEST).read_text())["extra"]["encrypted"] is True
    assert not (out / "_work").exists()


def test_encrypted_pieces_are_never_plaintext_and_a_failed_split_leaves_none(sms_docs, tmp_path, local_engine):
    from pipeline.split import passes

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"footer": base64.b64encode(os.urandom(16)).decode(),
                                "columns": base64.b64encode(os.urandom(16)).decode()}))
    os.chmod(keys, 0o600)
    shard = Dataset(sms_docs).require_shards()[0]
    spec = passes.KeySpec(seed=1, class_col="label")
    given = passes.GivenSplit("label", (("ham", "train"), ("spam", "test")))
    task = passes.WriteTask(shard, 0, spec, tmp_path / "work", None, tmp_path / "rejected", key_file=keys,
                            given=given)
    written = passes.write_pieces(task)
    labels = pl.read_parquet(shard)["label"]
    assert written["pieces"] == {"train": (labels == "ham").sum(), "val": 0, "test": (labels == "spam").sum()}
    assert written["pieces"]["train"] > 0 and written["pieces"]["test"] > 0
    pieces = [p for p in (tmp_path / "work" / "pieces").rglob("*.parquet") if pq.read_metadata(p).num_rows]
    assert len(pieces) == 2
    for piece in pieces:  # (an empty piece holds no text; its plaintext footer reads as 0 rows)
        with pytest.raises(Exception, match="(?i)encrypt|decrypt"):
            pl.read_parquet(piece)
    # a split that fails after writing its pieces removes them (a kill -9 cannot: see docs/trust.md)
    out = tmp_path / "splits"
    with pytest.raises(Exception, match="not_a_column"):
        run_split(sms_docs, out, local_engine, keep_split="not_a_column", encrypt_key_file=keys)
    assert not (out / "_work").exists()


def test_cli_ratios_flag_and_validation_errors(sms_docs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "splits"
    ok = runner.invoke(cli, ["split", "--input", str(sms_docs), "--output", str(out), "--workers", "0",
                             "--ratios", "0.7,0.15,0.15", "--stratify", "label", "--balance", "undersample"])
    assert ok.exit_code == 0, ok.output
    assert "split" in ok.output and "undersampled=" in ok.output
    assert exported(out)["counts"]["val"]["rows"] == 836
    bad = runner.invoke(cli, ["split", "--input", str(sms_docs), "--output", str(out), "--workers", "0",
                              "--ratios", "0.7,0.2"])
    assert bad.exit_code == 2 and "ratios" in bad.output
    bad = runner.invoke(cli, ["split", "--input", str(sms_docs), "--output", str(out), "--workers", "0",
                              "--balance", "oversample"])
    assert bad.exit_code == 2 and "needs stratify" in bad.output


def test_options_accept_job_file_lists_and_tables():
    options = split.Options(ratios=[0.6, 0.2, 0.2], stratify="label", balance="target",
                            target={"a": 0.5, "b": 0.5})
    assert options.ratio_values() == [0.6, 0.2, 0.2]
    assert options.target_shares() == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="time_col and stratify"):
        split.Options(stratify="label", time_col="fetched_at")


def test_job_file_with_list_ratios_and_a_target_table(sms_docs, tmp_path):
    from pipeline.runner import run_job

    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
input = "{sms_docs}"
output = "{tmp_path / 'out'}"
seed = 3

[engine]
workers = 0

[split]
ratios = [0.6, 0.2, 0.2]
stratify = "label"
balance = "target"
target = {{ ham = 0.5, spam = 0.5 }}
""")
    [result] = run_job(job, echo=lambda *_: None)
    manifest = exported(tmp_path / "out" / "splits")
    assert manifest["seed"] == 3 and manifest["options"]["ratios"] == "0.6,0.2,0.2"
    assert manifest["counts"]["train"]["classes"] == {"ham": 1672, "spam": 1672}
    assert result.rows_out == manifest["rows_out"]
    stored = json.loads((tmp_path / "out" / "splits" / MANIFEST).read_text())
    assert stored["result"]["stage"] == "split"
