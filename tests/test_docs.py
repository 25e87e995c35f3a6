"""The docs agree with the code: a page per registered stage whose option table is its model's,
every docs path named in the code exists, and every relative link in the docs resolves."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pipeline import docgen
from pipeline.stages import STAGES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_registered_stage_has_a_page_whose_table_is_its_model(stage):
    page = docgen.page_path(stage)
    assert page.is_file(), f"stage `{stage}` has no page {page}: run `python -m pipeline.docgen` and write it"
    text = page.read_text()
    assert docgen.render_page(text, docgen.stage_options_markdown(stage), page) == text, (
        f"{page}: the option table differs from {stage}'s Options model; run `python -m pipeline.docgen`"
    )
    for name, field in STAGES[stage].load().Options.model_fields.items():
        assert f"| `{name}` |" in text  # every field has its row, with its docstring
        assert " ".join((field.description or "").split()).replace("|", "\\|") in text


def test_fetch_page_has_one_table_per_source_kind():
    text = docgen.page_path("fetch").read_text()
    sources = STAGES["fetch"].load().Options.model_fields["sources"]
    kinds = {docgen.kind_tag(model): model for model in docgen.nested_models(sources.annotation)}
    assert sorted(kinds) == ["api", "crawl", "files", "sql"]
    for kind, model in kinds.items():
        assert f"### `{kind}`: `[[fetch.sources]]` with `kind = \"{kind}\"`, or `pipeline fetch {kind}`" in text
        section = text.split(f"### `{kind}`:")[1].split("\n### ")[0]
        for name in model.model_fields:
            if name != "kind":
                assert f"| `{name}` |" in section, (kind, name)
    assert "| `max_pages` | `--max-pages` | int | `10000` |" in text
    assert "| `seeds` | `--seed`, `--seeds` | list of str | `[]` |" in text
    assert "| `headers` | job file only | table | `{}` |" in text


def test_check_finds_a_changed_table_and_a_missing_page_and_write_repairs_them(tmp_path):
    shutil.copytree(docgen.STAGE_PAGES.parent, tmp_path / "docs")
    pages = tmp_path / "docs" / "stages"
    assert docgen.stale_pages(pages) == []
    dedup = pages / "dedup.md"
    dedup.write_text(dedup.read_text().replace("| `threshold` | `--threshold` | float | `0.8` |",
                                               "| `threshold` | `--threshold` | float | `0.9` |"))
    (pages / "label.md").unlink()
    problems = docgen.stale_pages(pages)
    assert len(problems) == 2
    assert "dedup.md: option table differs from dedup's Options model" in problems[0]
    assert "label.md: missing (stage `label` is registered" in problems[1]
    assert docgen.main(["--check", "--pages", str(pages)]) == 1

    assert docgen.main(["--pages", str(pages)]) == 0
    assert docgen.stale_pages(pages) == []
    assert "| `threshold` | `--threshold` | float | `0.8` |" in dedup.read_text()
    started = (pages / "label.md").read_text()
    assert started.startswith("# label: apply labels.toml")
    assert "| `min_confidence` | `--min-confidence` | float | `0.5` |" in started


def test_a_page_without_markers_is_named():
    with pytest.raises(docgen.PageError, match=r"x\.md: no `<!-- options:begin -->`"):
        docgen.render_page("# x\nno table here\n", "| table |", Path("x.md"))


def test_every_docs_path_named_in_the_code_exists():
    named = set()
    for source in (ROOT / "pipeline").rglob("*.py"):
        for match in re.finditer(r"\bdocs/[\w./-]+\.md\b", source.read_text()):
            named.add((source.relative_to(ROOT), match.group()))
    assert named, "the code names no docs page at all (the search pattern is broken)"
    missing = [f"{source}: {path}" for source, path in sorted(named) if not (ROOT / path).is_file()]
    assert missing == []


def _markdown_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "benchmarks" / "RESULTS.md"]
    return files + sorted((ROOT / "docs").rglob("*.md"))


def _anchors(page: Path) -> set[str]:
    """The anchors a page offers: GitHub's slug of every heading, and explicit `<a id=...>`."""
    anchors, fence = set(), False
    for line in page.read_text().split("\n"):
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors | set(re.findall(r'<a id="([^"]+)"', page.read_text()))


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for page in _markdown_files():
        assert page.is_file(), page
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []
