"""labels.toml: the cluster → label map a person edits (written by `pipeline cluster`).

Format: one ``[[cluster]]`` table per cluster with ``id`` (int), ``name`` (the label; clusters
with the same name are merged), optional ``merge_into`` (another cluster's id: take its name),
optional ``drop`` (true: the cluster's rows go to rejected/ with reason ``cluster_dropped``).
Other keys (``size``, ``share``, ``top_terms``, ``examples``) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.dataset import read_toml
from pipeline.errors import JobError


@dataclass(frozen=True)
class ClusterLabel:
    cluster: int
    label: str | None
    drop: bool


def read_label_map(path: Path) -> list[ClusterLabel]:
    """Parse and validate a labels.toml; errors name the file, the entry and the key."""
    path = Path(path)
    data = read_toml(path, f"--map {path}")
    entries = data.get("cluster")
    if not isinstance(entries, list):
        raise JobError(f"--map {path}: expected [[cluster]] tables (id, name, drop)")
    by_id: dict[int, dict] = {}
    for n, entry in enumerate(entries):
        where = f"--map {path}: cluster entry {n + 1}"
        cid = entry.get("id")
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise JobError(f"{where}: key `id` must be an integer (found {cid!r})")
        if cid in by_id:
            raise JobError(f"{where}: cluster id {cid} appears twice")
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise JobError(f"{where}: key `name` must be a non-empty string (found {name!r})")
        drop = entry.get("drop", False)
        if not isinstance(drop, bool):
            raise JobError(f"{where}: key `drop` must be true or false (found {drop!r})")
        merge = entry.get("merge_into")
        if merge is not None and (not isinstance(merge, int) or isinstance(merge, bool)):
            raise JobError(f"{where}: key `merge_into` must be a cluster id (found {merge!r})")
        by_id[cid] = {"name": name.strip() if name else None, "drop": drop, "merge_into": merge}
    out = []
    for cid, entry in sorted(by_id.items()):
        label, seen = entry["name"], {cid}
        target = entry["merge_into"]
        while target is not None:
            if target not in by_id:
                raise JobError(f"--map {path}: cluster {cid}: merge_into {target} is not a cluster id in the file")
            if target in seen:
                raise JobError(f"--map {path}: cluster {cid}: merge_into forms a cycle {sorted(seen)}")
            seen.add(target)
            label, target = by_id[target]["name"], by_id[target]["merge_into"]
        out.append(ClusterLabel(cid, label, entry["drop"]))
    return out


def map_frame(entries: list[ClusterLabel]) -> pl.DataFrame:
    """The map as a small frame to join on `cluster`."""
    return pl.DataFrame(
        {"cluster": [e.cluster for e in entries], "_map_label": [e.label for e in entries],
         "_map_drop": [e.drop for e in entries]},
        schema={"cluster": pl.Int32, "_map_label": pl.String, "_map_drop": pl.Boolean},
    )
