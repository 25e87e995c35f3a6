"""Which dataset folder is which: a report's inputs identified by manifest, schema and folder.

A job hands the report every dataset folder it wrote, in any order; a user may hand it any
folders at all. Each is recognised by its manifest's ``stage`` and ``dataset`` keys, then by its
columns (``reason`` = rejected rows, ``kept_id``/``kind`` = the dedup audit, ``body`` = raw pages)
and last by its folder name, so the report works with any stage absent.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.dataset import Dataset
from pipeline.stages import ORDER, STAGES

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
_FOLDER_STAGE = {spec.folder: name for name, spec in STAGES.items()}
_HIVE = re.compile(r"^([^=/]+)=([^/]*)$")


@dataclass
class DatasetInfo:
    """One input folder: where it sits in the pipeline and what kind of rows it holds.

    kind: "docs" (documents), "raw" (fetched pages), "rejected" (dropped rows with `reason`),
    "audit" (dedup's duplicates: id, kept_id, kind, similarity) or "other".
    """

    path: Path
    stage: str
    dataset: str
    kind: str
    columns: dict[str, str]
    shards: list[Path]
    manifest: dict[str, Any] | None = None
    rows: int = 0
    bytes: int = 0
    display: str = ""
    encrypted: bool = False  # split's Parquet modular encryption: column data needs the key file

    @property
    def order(self) -> int:
        return ORDER.index(self.stage) if self.stage in ORDER else len(ORDER)

    @property
    def name(self) -> str:
        """A short display name: the folder relative to the job (e.g. rejected/clean)."""
        return self.display or self.path.name

    @property
    def result(self) -> dict[str, Any] | None:
        return (self.manifest or {}).get("result")


def hive_values(root: Path, shard: Path) -> dict[str, str]:
    """Hive partition values (`key=value` folders) and a train/val/test folder of one shard."""
    values: dict[str, str] = {}
    try:
        parts = shard.relative_to(root).parts[:-1]
    except ValueError:
        parts = ()
    for part in parts:
        match = _HIVE.match(part)
        if match:
            values[match.group(1)] = match.group(2)
        elif part in SPLIT_NAMES:
            values.setdefault("split", part)
    if "split" not in values and root.name in SPLIT_NAMES:
        values["split"] = root.name
    return values


def _stage_of(path: Path, manifest: dict[str, Any] | None) -> str:
    if manifest and manifest.get("stage"):
        return str(manifest["stage"])
    for part in reversed(path.parts):
        if part in _FOLDER_STAGE:
            return _FOLDER_STAGE[part]
    return "unknown"


def _kind_of(path: Path, dataset: str, columns: dict[str, str], text_column: str) -> str:
    # the dedup audit also carries `reason`: recognise it first
    if {"kept_id", "kind"} <= set(columns) or dataset == "duplicates":
        return "audit"
    if dataset == "rejected" or "rejected" in path.parts or "reason" in columns:
        return "rejected"
    if text_column in columns:
        return "docs"
    if "body" in columns:
        return "raw"
    return "other"


def describe(path: Path, common_root: Path | None = None, text_column: str = "text") -> DatasetInfo | None:
    """A DatasetInfo for one folder, or None when it holds no shards at all."""
    dataset = Dataset(path)
    manifest = dataset.manifest()
    try:
        shards = dataset.shard_paths()
    except Exception as error:  # noqa: BLE001 - an unreadable folder is reported, not fatal
        # e.g. a stage that did not finish: said on stderr, not dropped without a word
        log.warning("report: %s not read: %s", path, error)
        return None
    # manifests may list other files beside the Parquet shards (split's JSONL copies)
    shards = [s for s in shards if s.suffix == ".parquet" and s.exists()]
    columns: dict[str, str] = {}
    if manifest and manifest.get("schema"):
        columns = {c["name"]: c["type"] for c in manifest["schema"]}
    elif shards:
        columns = {f.name: str(f.type) for f in pq.read_schema(shards[0])}
    for shard in shards[:1]:
        columns.update({k: "string" for k in hive_values(path, shard) if k not in columns})
    name = manifest.get("dataset", "main") if manifest else "main"
    info = DatasetInfo(
        path=path,
        stage=_stage_of(path, manifest),
        dataset=str(name),
        kind=_kind_of(path, str(name), columns, text_column),
        columns=columns,
        shards=shards,
        manifest=manifest,
    )
    if manifest is not None:
        info.rows = int(manifest.get("rows", 0))
        info.bytes = int(manifest.get("bytes", 0))
    else:
        info.rows = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
        info.bytes = sum(s.stat().st_size for s in shards)
    info.encrypted = _written_encrypted(path, manifest)
    if common_root is not None:
        try:
            info.display = str(path.relative_to(common_root))
        except ValueError:
            info.display = str(path)
    return info


def _written_encrypted(path: Path, manifest: dict[str, Any] | None) -> bool:
    """True when split wrote the folder (or the split folder it is in) with an encryption key.

    Told by the manifest, not by reading the file: pyarrow aborts the process (C++ terminate)
    on touching an encrypted shard's column metadata without the keys."""
    for candidate in (manifest, Dataset(path.parent).manifest() if manifest is None else None):
        if candidate and (candidate.get("options") or {}).get("encrypt_key_file"):
            return True
    return False


def discover(inputs: list[Path], text_column: str = "text") -> list[DatasetInfo]:
    """Describe every input folder, pipeline order, folders nested in another input dropped
    when that input's manifest already lists their shards (e.g. splits/ and splits/train/)."""
    paths = []
    for p in inputs:
        p = Path(p).resolve()
        if p not in paths:
            paths.append(p)
    common = _common_root(paths)
    infos = [i for i in (describe(p, common, text_column) for p in paths) if i is not None]
    kept = []
    for info in infos:
        covered = any(
            other is not info and other.path in info.path.parents
            and {s.resolve() for s in info.shards} <= {s.resolve() for s in other.shards}
            for other in infos
        )
        if not covered:
            kept.append(info)
    kept.sort(key=lambda i: (i.order, i.kind != "docs", str(i.path)))
    return kept


def _common_root(paths: list[Path]) -> Path | None:
    if not paths:
        return None
    if len(paths) == 1:
        return paths[0].parent
    import os

    return Path(os.path.commonpath([str(p) for p in paths]))


def final_datasets(infos: list[DatasetInfo]) -> list[DatasetInfo]:
    """The documents a user would train on: every docs dataset of the latest stage that has any."""
    docs = [i for i in infos if i.kind == "docs" and i.shards]
    if not docs:
        return []
    last = max(i.order for i in docs)
    return [i for i in docs if i.order == last]
