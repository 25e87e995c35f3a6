"""The per-shard map tasks of a stage with global fits (features, cluster, label).

Like `pipeline.stage.run_map_stage`, but split so the stage can create its `StageOutput`
(which clears a stale output folder), fit its models into that folder, then run the map.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.dataset import StageOutput
from pipeline.stage import MapTask, input_shards, shard_relpath


def shard_tasks(inputs: list[Path], transform, plan, output: StageOutput) -> tuple[list[Path], list[MapTask]]:
    """Input shards in order and one MapTask per shard (same output names as run_map_stage)."""
    pairs = input_shards(inputs)
    tasks = []
    for index, (root, shard) in enumerate(pairs):
        rel = shard_relpath(root, shard)
        # several inputs may share relative names; the prefix keeps output shards distinct
        relpath = rel if len(inputs) == 1 else f"in{index:05d}-{Path(rel).name}"
        tasks.append(MapTask(key=f"{root}/{rel}", shard=shard, relpath=relpath,
                             transform=transform, options=plan, output=output))
    return [s for _, s in pairs], tasks


def pending(output: StageOutput, tasks: list[MapTask]) -> tuple[list[MapTask], list]:
    """Tasks still to run, and the records of those an earlier run finished."""
    todo_keys, done = output.pending(t.key for t in tasks)
    keys = set(todo_keys)
    return [t for t in tasks if t.key in keys], done
