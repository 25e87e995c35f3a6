"""Missing values and type coercion: every policy, rejected rows named by column."""

from __future__ import annotations

import json

import polars as pl
import pytest
from pydantic import ValidationError

from pipeline.clean.missing import ColumnPolicy, apply_policies, global_fills

TABLE = pl.DataFrame({
    "price": ["10", "NA", "30", "abc", "", "1,000"],
    "qty": [1.0, None, 3.0, 4.0, float("nan"), 6.0],
    "city": ["Oslo", None, "Oslo", "Rome", "N/A", "Rome"],
})


def run(policies: list[dict], frame: pl.DataFrame = TABLE, fills: dict | None = None) -> pl.DataFrame:
    return apply_policies(frame.lazy(), [ColumnPolicy(**p) for p in policies], fills or {}).collect()


def test_coercion_rejects_unparsable_values():
    out = run([{"column": "price", "dtype": "float"}])
    assert out["price"].to_list() == [10.0, None, 30.0, None, None, 1000.0]
    assert out["_reject"].to_list() == [None, None, None, "type:price", None, None]
    assert out["_raw:price"].to_list() == TABLE["price"].to_list()  # input values, for rejected rows


def test_drop_names_the_column():
    out = run([{"column": "price", "dtype": "int", "missing": "drop"}, {"column": "city", "missing": "drop"}])
    assert out["_reject"].to_list() == [None, "missing:price", None, "type:price", "missing:price", None]
    out = run([{"column": "city", "missing": "drop"}])
    assert out["_reject"].to_list() == [None, "missing:city", None, None, "missing:city", None]


@pytest.mark.parametrize(("missing", "extra", "expected"), [
    ("constant", {"value": 0}, [1.0, 0.0, 3.0, 4.0, 0.0, 6.0]),
    ("mean", {}, [1.0, 3.5, 3.0, 4.0, 3.5, 6.0]),
    ("median", {}, [1.0, 3.5, 3.0, 4.0, 3.5, 6.0]),
    ("interpolate", {}, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    ("forward_fill", {}, [1.0, 1.0, 3.0, 4.0, 4.0, 6.0]),
    ("keep", {}, [1.0, None, 3.0, 4.0, None, 6.0]),
])
def test_numeric_fills(missing, extra, expected):
    out = run([{"column": "qty", "dtype": "float", "missing": missing, **extra}])
    assert out["qty"].to_list() == expected
    assert out["_reject"].null_count() == out.height


def test_mode_fill_for_text():
    out = run([{"column": "city", "missing": "mode"}])
    assert out["city"].to_list() == ["Oslo", "Oslo", "Oslo", "Rome", "Oslo", "Rome"]  # tie → smallest


def test_global_fill_overrides_shard_statistic():
    policies = [ColumnPolicy(column="qty", dtype="float", missing="mean")]
    whole = pl.concat([TABLE, TABLE.with_columns(pl.col("qty") * 10)])
    fills = global_fills(whole.lazy(), policies)
    assert fills == {"qty": pytest.approx(19.25)}
    out = apply_policies(TABLE.lazy(), policies, fills).collect()
    assert out["qty"].to_list()[1] == pytest.approx(19.25)


def test_columns_lifted_from_meta():
    """`fetch files` keeps CSV columns other than text/title/label in the `meta` JSON."""
    meta = [json.dumps({"rating": r}) for r in ["4.5", "n/a", "3", "x"]]
    frame = pl.DataFrame({"text": ["a", "b", "c", "d"], "meta": meta})
    out = run([{"column": "rating", "dtype": "float", "missing": "median"}], frame)
    assert out["rating"].to_list() == [4.5, 3.75, 3.0, 3.75]  # the "x" row is rejected anyway
    assert out["_reject"].to_list() == [None, None, None, "type:rating"]


def test_bool_and_date():
    frame = pl.DataFrame({"ok": ["yes", "no", "maybe", None], "day": ["2024-01-15", "15 Jan", "2024-02-01", "NA"]})
    out = run([{"column": "ok", "dtype": "bool"}, {"column": "day", "dtype": "date", "missing": "drop"}], frame)
    assert out["ok"].to_list() == [True, False, None, None]
    assert out["_reject"].to_list() == [None, "type:day", "type:ok", "missing:day"]


def test_policy_validation_names_the_problem():
    with pytest.raises(ValidationError, match="needs a value"):
        ColumnPolicy(column="a", missing="constant")
    with pytest.raises(ValidationError, match="numeric"):
        ColumnPolicy(column="a", dtype="string", missing="mean")
