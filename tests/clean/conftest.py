"""Real texts for the clean tests, read from ../shared/data."""

from __future__ import annotations

import json

import polars as pl
import pytest


@pytest.fixture(scope="session")
def sms(shared_data) -> pl.DataFrame:
    """UCI SMS Spam Collection: 5,574 real messages (many with real-world phone numbers)."""
    return pl.read_csv(shared_data / "labelled" / "sms_spam.tsv", separator="\t", quote_char=None).rename({"SMS": "text"})


@pytest.fixture(scope="session")
def web_docs(shared_data) -> pl.DataFrame:
    """WCXB ground-truth main content: 1,495 human-checked web page texts of 7 page types."""
    rows = [json.loads(line) for line in (shared_data / "extraction" / "wcxb-dev" / "ground-truth.jsonl").open()]
    return pl.DataFrame(
        {"id": [str(r["id"]) for r in rows], "page_type": [r["page_type"] for r in rows],
         "text": [r["main_content"] for r in rows]}
    ).filter(pl.col("text").is_not_null())


@pytest.fixture(scope="session")
def articles(shared_data) -> pl.DataFrame:
    """ScrapingHub article-extraction benchmark: 181 news article bodies."""
    truth = json.loads((shared_data / "extraction" / "aeb" / "ground-truth.json").read_text())
    return pl.DataFrame({"id": list(truth), "text": [v["articleBody"] for v in truth.values()]})
