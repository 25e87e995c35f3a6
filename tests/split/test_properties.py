"""Property tests (hypothesis): the quota and group invariants on random inputs.

Random shard counts, class mixes (with nulls), group layouts and ratios; the stage runs end to end
in process and the exported rows are checked against the invariants.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import split
from pipeline.engine import Engine
from pipeline.split.quotas import SPLITS, apportion

ENGINE = Engine(workers=0, progress=False)
EXAMPLES = int(os.environ.get("SPLIT_PROPERTY_EXAMPLES", "25"))  # more for a deeper search
ratio_parts = st.tuples(st.integers(0, 10), st.integers(0, 10), st.integers(0, 10)).filter(
    lambda t: t[0] > 0)


def ratios_text(parts: tuple[int, int, int]) -> tuple[str, list[float]]:
    total = sum(parts)
    shares = [p / total for p in parts]
    return ",".join(repr(s) for s in shares), shares


@st.composite
def datasets(draw):
    n = draw(st.integers(1, 120))
    labels = draw(st.lists(st.sampled_from(["a", "b", "c", "d", None]), min_size=n, max_size=n))
    groups = draw(st.lists(st.one_of(st.none(), st.integers(0, n // 3).map(str)), min_size=n, max_size=n))
    shards = draw(st.integers(1, 4))
    return pl.DataFrame({"id": [f"r{i}" for i in range(n)], "text": ["x"] * n, "label": labels,
                         "near_group": groups}), shards


def run_on(frame: pl.DataFrame, shards: int, **options) -> pl.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "docs"
        root.mkdir()
        size = -(-frame.height // shards)
        for i in range(shards):
            frame.slice(i * size, size).write_parquet(root / f"part-{i:05d}.parquet")
        out = Path(tmp) / "splits"
        split.run([root], out, split.Options(**options), ENGINE)
        assert split.verify(out) == []
        return pl.read_parquet(str(out / "*" / "part-*.parquet"))


@given(total=st.integers(0, 10**9), parts=ratio_parts)
def test_apportion_sums_exactly_and_stays_within_one(total, parts):
    _, shares = ratios_text(parts)
    counts = apportion(total, shares)
    assert sum(counts) == total
    assert all(abs(c - total * s) < 1 for c, s in zip(counts, shares, strict=True))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets(), parts=ratio_parts, seed=st.integers(0, 2**31))
def test_stratified_split_meets_every_quota(data, parts, seed):
    frame, shards = data
    text, shares = ratios_text(parts)
    rows = run_on(frame, shards, stratify="label", ratios=text, seed=seed)
    assert sorted(rows["id"]) == sorted(frame["id"])  # every row exactly once
    label = pl.col("label").fill_null("__null__")
    totals = dict(frame.group_by(label).len().iter_rows())
    counts = {(s, c): n for s, c, n in rows.group_by("split", label).len().iter_rows()}
    for cls, total in totals.items():
        for name, share in zip(SPLITS, shares, strict=True):
            assert abs(counts.get((name, cls), 0) - total * share) < 1


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets(), parts=ratio_parts, seed=st.integers(0, 2**31), stratify=st.booleans())
def test_group_split_never_cuts_a_group(data, parts, seed, stratify):
    frame, shards = data
    text, shares = ratios_text(parts)
    options = {"group": "near_group", "ratios": text, "seed": seed}
    if stratify:
        options["stratify"] = "label"
    rows = run_on(frame, shards, **options)
    assert sorted(rows["id"]) == sorted(frame["id"])
    grouped = rows.filter(pl.col("near_group").is_not_null())
    assert grouped.group_by("near_group").agg(pl.col("split").n_unique())["split"].max() in (None, 1)
    if not stratify:
        # every split is within the largest group of its exact share of the rows
        largest = max(frame.group_by("near_group").len().filter(pl.col("near_group").is_not_null())["len"].max() or 1, 1)
        sizes = dict(rows.group_by("split").len().iter_rows())
        for name, share in zip(SPLITS, shares, strict=True):
            assert abs(sizes.get(name, 0) - frame.height * share) <= largest
