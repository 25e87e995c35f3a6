"""The execution engine: Dask distributed, a LocalCluster by default or an existing scheduler.

`Engine.map` runs a per-shard function over task descriptions with a progress bar and
retries, and turns a failure into a `ShardError` that names the failing shard and carries the
original error text. This module knows no stage.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class ShardError(RuntimeError):
    """A per-shard task failed; ``label`` names the shard, ``detail`` is the original error."""

    def __init__(self, label: str, detail: str):
        super().__init__(f"shard {label} failed:\n{detail}")
        self.label = label
        self.detail = detail

    def __reduce__(self):
        return (ShardError, (self.label, self.detail))


def _call_labelled(fn: Callable[[Any], Any], item: Any, label: str) -> Any:
    """Run on a worker: call fn, and re-raise any error as a ShardError naming the shard."""
    try:
        return fn(item)
    except ShardError:
        raise
    except Exception as exc:  # noqa: BLE001 - every error is re-raised with its shard
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise ShardError(label, detail.strip()) from None


def parse_memory(value: str | int | None) -> int | str | None:
    """'4GiB', '512MB', 2**30, 'auto' or None → what dask's memory_limit accepts."""
    if value is None or value == "auto":
        return "auto"
    if isinstance(value, int):
        return value
    from dask.utils import parse_bytes

    return parse_bytes(value)


class Engine:
    """A Dask client for the length of a job. Use as a context manager.

    workers: worker processes of the LocalCluster (default: one per core); 0 runs every task
      in this process, in order, with no Dask at all (debugging, tiny inputs).
    memory_limit: per worker ("4GiB", "auto" = the machine's memory divided among workers).
    scheduler: "tcp://HOST:PORT" of a running scheduler; then workers/memory_limit are its own.
    """

    def __init__(
        self,
        workers: int | None = None,
        memory_limit: str | int | None = "auto",
        scheduler: str | None = None,
        threads_per_worker: int = 1,
        retries: int = 1,
        progress: bool | None = None,
        no_worker_timeout: float = 120.0,
        fetch_timeout: float = 60.0,
    ):
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.memory_limit = parse_memory(memory_limit)
        self.scheduler = scheduler or None
        self.threads_per_worker = threads_per_worker
        self.retries = retries
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.no_worker_timeout = no_worker_timeout
        self.fetch_timeout = fetch_timeout
        self.client = None
        self.cluster = None

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Engine:
        # the cluster starts on the first `map`: a job or stage that never maps (a crawl) pays nothing
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def local(self) -> bool:
        return self.scheduler is None and self.workers == 0

    def start(self) -> None:
        if self.client is not None or self.local:
            return
        from distributed import Client, LocalCluster

        for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if self.scheduler:
            self.client = Client(self.scheduler, timeout="30s")
        else:
            self.cluster = LocalCluster(
                env=self.worker_thread_env(),
                n_workers=self.workers,
                threads_per_worker=self.threads_per_worker,
                memory_limit=self.memory_limit,
                processes=True,
                dashboard_address=":0",  # a free port: two jobs on one machine never collide
                silence_logs=logging.CRITICAL,  # failures surface as ShardError
            )
            self.client = Client(self.cluster)

    def worker_thread_env(self) -> dict[str, str]:
        """Each local worker gets its share of the cores for Polars, BLAS and OpenMP pools.

        Without it every worker process starts one thread per core, and n workers on n cores
        run n*n threads that fight over the same cores (measured: dedup took 2x the CPU of an
        in-process run). An external cluster's workers are configured by whoever starts them.
        """
        share = str(max(1, (os.cpu_count() or 1) // max(1, self.workers)) * self.threads_per_worker)
        names = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        return {name: os.environ.get(name, share) for name in names}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def describe(self) -> str:
        if self.local:
            return "in-process (workers=0)"
        if self.scheduler:
            return f"Dask scheduler {self.scheduler}"
        from dask.utils import format_bytes

        limit = format_bytes(self.memory_limit) if isinstance(self.memory_limit, int) else self.memory_limit
        return f"Dask LocalCluster, {self.workers} workers, memory_limit={limit} per worker"

    # -- work ----------------------------------------------------------------------------
    def map(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        labels: Sequence[str] | None = None,
        desc: str = "shards",
    ) -> list[R]:
        """fn over items on the workers, results in the order of items.

        Progress is shown per finished item. The first failure (after retries) cancels the
        rest and raises ShardError naming its shard; work already committed stays on disk.
        """
        labels = list(labels) if labels is not None else [str(i) for i in range(len(items))]
        if not items:
            return []
        bar = tqdm(total=len(items), desc=desc, unit="shard", disable=not self.progress, leave=False)
        try:
            if self.local:
                results = []
                for item, label in zip(items, labels, strict=True):
                    results.append(_call_labelled(fn, item, label))
                    bar.update()
                return results
            self.start()
            from distributed import wait

            futures = [
                self.client.submit(
                    _call_labelled, fn, item, label, pure=False, retries=self.retries,
                    key=f"{desc}-{i}-{os.urandom(4).hex()}",
                )
                for i, (item, label) in enumerate(zip(items, labels, strict=True))
            ]
            index = {f.key: i for i, f in enumerate(futures)}
            results: list[Any] = [None] * len(futures)
            pending = set(futures)
            lost: dict[str, int] = {}  # key -> times its finished result could not be fetched
            workerless_since: float | None = None
            try:
                while pending:
                    try:
                        done, pending = wait(pending, timeout=5, return_when="FIRST_COMPLETED")
                    except TimeoutError:
                        done = set()
                    if not done:
                        # a cluster whose workers all died (OOM-killed, killed by hand) never
                        # finishes: say so instead of waiting forever
                        if self.client.scheduler_info().get("workers"):
                            workerless_since = None
                        elif workerless_since is None:
                            workerless_since = time.monotonic()
                        elif time.monotonic() - workerless_since > self.no_worker_timeout:
                            raise RuntimeError(
                                f"{desc}: no Dask worker alive for {self.no_worker_timeout:.0f} s "
                                f"({self.describe()}); finished shards are kept, re-run to resume")
                        continue
                    for future in done:
                        if future.status == "error":
                            exc = future.exception()
                            if isinstance(exc, ShardError):
                                raise exc
                            raise ShardError(labels[index[future.key]], repr(exc))
                        try:
                            results[index[future.key]] = future.result(timeout=self.fetch_timeout)
                        except TimeoutError:
                            # the worker holding the result died before handing it over (over
                            # its memory limit, typically) and Dask recomputes it; a worker
                            # that dies that way every time would loop forever: stop instead
                            lost[future.key] = lost.get(future.key, 0) + 1
                            if lost[future.key] > self.retries:
                                raise ShardError(labels[index[future.key]], (
                                    f"its result could not be fetched in {lost[future.key]} tries of "
                                    f"{self.fetch_timeout:.0f} s: the worker holding it kept dying (over "
                                    "its memory limit?); raise memory_limit or use smaller shards")) from None
                            pending.add(future)
                            continue
                        bar.update()
            except BaseException:
                self.client.cancel(list(pending))
                raise
            return results
        finally:
            bar.close()

    def run_on_driver(self, fn: Callable[[], R]) -> R:
        """Small global steps that need no worker (kept explicit so stages say what runs where)."""
        return fn()
