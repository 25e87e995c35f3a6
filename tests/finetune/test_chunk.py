"""Chunking: no chunk over N tokens, the chunks rejoin to the text, parent ids and stable ids,
cuts at headings before paragraphs before sentences, overlap, other record kinds untouched."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.chunk import (
    HEADING,
    LINE,
    PARAGRAPH,
    SENTENCE,
    Options,
    char_levels,
    chunk_frame,
    rejoin,
)
from pipeline.tokens import count_tokens


def _check(chunks: pl.DataFrame, documents: pl.DataFrame, max_tokens: int) -> None:
    tokens = count_tokens(chunks["text"], "gpt2")
    assert int(tokens.max()) <= max_tokens
    back = rejoin(chunks).join(documents.select(pl.col("id").alias("parent_id"), pl.col("text").alias("original")),
                               on="parent_id", how="full", coalesce=True)
    assert back.height == documents.height
    assert (back["text"] == back["original"]).all()


@pytest.mark.parametrize(("max_tokens", "overlap"), [(64, 0), (300, 0), (300, 50), (2048, 128)])
def test_no_chunk_is_over_the_limit_and_the_chunks_rejoin_to_the_text(long_documents, max_tokens, overlap):
    chunks = chunk_frame(long_documents, Options(max_tokens=max_tokens, overlap_tokens=overlap))
    _check(chunks, long_documents, max_tokens)
    assert chunks.height > long_documents.height
    assert chunks.columns == [*long_documents.columns, "parent_id", "chunk_index", "chunk_count", "chunk_start", "chunk_overlap"]
    counts = chunks.group_by("parent_id").agg(pl.len(), pl.col("chunk_index").max(), pl.col("chunk_count").first())
    assert (counts["len"] == counts["chunk_index"] + 1).all()
    assert (counts["len"] == counts["chunk_count"]).all()
    assert chunks["id"].n_unique() == chunks.height
    if overlap:
        later = chunks.filter(pl.col("chunk_index") > 0)
        assert (later["chunk_overlap"] > 0).all()
        # the overlap is the end of the chunk before it
        previous = chunks.filter(pl.col("chunk_index") < pl.col("chunk_count") - 1)
        for prev, nxt in zip(previous.iter_rows(named=True), later.iter_rows(named=True), strict=True):
            assert prev["text"].endswith(nxt["text"][: nxt["chunk_overlap"]])
    else:
        assert (chunks["chunk_overlap"] == 0).all()


def test_chunk_ids_are_stable_and_short_documents_keep_their_id(long_documents):
    short = pl.DataFrame({"id": ["short-1"], "source": ["x"], "text": ["A short note."], "label": ["n"]})
    frame = pl.concat([long_documents, short])
    first = chunk_frame(frame, Options(max_tokens=200))
    second = chunk_frame(frame.reverse(), Options(max_tokens=200))
    assert first.sort("id").equals(second.sort("id"))
    row = first.filter(pl.col("parent_id") == "short-1")
    assert row.height == 1 and row["id"][0] == "short-1" and row["chunk_index"][0] == 0
    assert first.filter(pl.col("parent_id") == "doc-GPL-3")["id"].str.len_chars().unique().to_list() == [16]


def test_cuts_prefer_headings_then_paragraphs_then_sentences():
    sections = []
    for n in range(6):
        body = " ".join(f"Sentence {n}.{k} says something about topic {n} in plain words." for k in range(6))
        sections.append(f"# Section {n}\n\n{body}\n\n{body}")
    text = "\n\n".join(sections)
    frame = pl.DataFrame({"id": ["md"], "text": [text]})
    section_tokens = int(count_tokens(pl.Series([sections[0] + "\n\n"]), "gpt2")[0])
    chunks = chunk_frame(frame, Options(max_tokens=int(section_tokens * 2.5)))
    _check(chunks, frame, int(section_tokens * 2.5))
    # every chunk but the first starts at a heading: whole sections, two per chunk
    assert all(t.lstrip().startswith("# Section") for t in chunks["text"].to_list())
    assert chunks.height == 3
    # a budget below one section: cut at paragraphs, then at sentence ends, never mid-sentence
    small = chunk_frame(frame, Options(max_tokens=int(section_tokens * 0.3)))
    _check(small, frame, int(section_tokens * 0.3))
    assert all(t.rstrip().endswith(".") or t.rstrip().split("\n")[-1].startswith("# Section") for t in small["text"].to_list())


def test_boundary_levels_of_characters():
    text = ("Title\n=====\n\nFirst para. Second sentence.\nNext line\n\n## Heading\n\nBody text, here.\n\n"
            "Underlined\n----------\nAfter it.\n\nSTANDALONE TITLE\n\nthe end")
    codepoints = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    levels = char_levels(codepoints, np.array([0, len(text)]))
    assert levels[text.index("First")] == PARAGRAPH
    assert levels[text.index("Second")] == SENTENCE
    assert levels[text.index("Next")] == LINE
    assert levels[text.index("## Heading")] == HEADING
    assert levels[text.index("Body")] == PARAGRAPH
    assert levels[text.index("Underlined")] == HEADING
    assert levels[text.index("After")] == LINE
    assert levels[text.index("STANDALONE")] == HEADING
    assert levels[text.index("the end")] == PARAGRAPH  # lower-case: not a title
    assert levels[0] == 255  # the start of a document is no cut
    assert levels[text.index("para")] == 255  # inside a sentence


def test_instruction_rows_and_null_texts_pass_through_as_one_chunk(long_documents):
    frame = pl.concat([
        long_documents.with_columns(pl.lit("text").alias("kind")),
        pl.DataFrame({"id": ["inst", "empty"], "source": ["x", "x"], "text": [long_documents["text"][0], None],
                      "label": [None, None], "kind": ["instruction", "text"]}),
    ], how="diagonal")
    chunks = chunk_frame(frame, Options(max_tokens=128))
    for parent in ("inst", "empty"):
        row = chunks.filter(pl.col("parent_id") == parent)
        assert row.height == 1 and row["id"][0] == parent and row["chunk_count"][0] == 1
    assert chunks.filter(pl.col("parent_id") == "inst")["text"][0] == long_documents["text"][0]


def test_overlap_must_fit_in_half_the_budget():
    with pytest.raises(ValueError, match="at most half"):
        Options(max_tokens=100, overlap_tokens=60)


def test_the_chunk_stage_runs_through_the_driver_and_resumes(tmp_path, long_documents, local_engine):
    from pipeline.chunk import run

    (tmp_path / "clean").mkdir()
    long_documents.write_parquet(tmp_path / "clean" / "part-00000.parquet")
    result = run([tmp_path / "clean"], tmp_path / "chunks", Options(max_tokens=256), local_engine)
    chunks = pl.read_parquet(tmp_path / "chunks" / "part-00000.parquet")
    assert result.rows_in == long_documents.height and result.rows_out == chunks.height
    assert result.details["documents_cut"] == long_documents.height
    _check(chunks, long_documents, 256)
    again = run([tmp_path / "clean"], tmp_path / "chunks", Options(max_tokens=256), local_engine)
    assert again.skipped_tasks == 1 and again.rows_out == chunks.height
