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
from contextlib import contextmanager
from typing import Any, TypeVar

from pipeline.errors import EngineError, JobError, PipelineError, ShardError
from pipeline.progress import Progress

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


def _call_labelled(fn: Callable[[Any], Any], item: Any, label: str) -> Any:
    """Run on a worker: call fn, and re-raise any error as a ShardError naming the shard (a
    PipelineError, such as an InputError naming a file and line, goes through as it is)."""
    try:
        return fn(item)
    except PipelineError:  # bad input or options, said with its file, line or key: not a bug
        raise
    except Exception as exc:  # noqa: BLE001 - every error is re-raised with its shard
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise ShardError(label, detail.strip()) from None


MIN_MEMORY = 128 * 2**20  # below this a worker cannot even import Polars
MAX_WORKERS_PER_CORE = 4  # more is a typo or a misunderstanding, not a faster job


def user_paths() -> list[str]:
    """The folders on this process's sys.path that are not the interpreter's own (the working
    directory, a script's folder, a job file's folder): where a user's modules are found."""
    import sysconfig

    own = {sysconfig.get_path(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.getcwd())
        if os.path.isdir(path) and path not in own and not path.startswith(sys.base_prefix + os.sep + "lib"):
            paths.append(path)
    return paths


@contextmanager
def spawned_without_main():
    """Worker processes started inside never re-run the user's `__main__` script.

    Dask starts each local worker with multiprocessing's spawn, which imports the parent's
    main script (or `python -m` module) in the child before the worker runs: a script that
    calls the pipeline without an `if __name__ == "__main__":` guard would run again in every
    worker, start clusters of its own and fail ("Nanny failed to start"). Our tasks never need
    the user's main module (a function defined there is pickled by value), so while the engine
    runs, the preparation data multiprocessing gives a spawned child leaves the main module out.
    """
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def without_main(name):
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    spawn.get_preparation_data = without_main
    try:
        yield
    finally:
        spawn.get_preparation_data = original


def parse_memory(value: str | int | None) -> int | str:
    """'4GiB', '512MB', 2**30, 'auto' or None → what dask's memory_limit accepts.

    Anything else is a JobError saying what was found and what is allowed.
    """
    if value is None or value == "auto":
        return "auto"
    from dask.utils import parse_bytes

    try:
        size = value if isinstance(value, int) else parse_bytes(str(value))
    except (ValueError, TypeError):
        raise JobError(f"memory_limit: {value!r} is not a size; use e.g. \"4GiB\", \"512MiB\" or \"auto\"") from None
    if size < MIN_MEMORY:
        raise JobError(f"memory_limit: {value!r} is below 128 MiB, too little for a worker to start")
    return size


def check_workers(workers: int | None) -> int | None:
    """Worker processes: None (one per core), 0 (in-process) up to 4 per core; else a JobError."""
    if workers is None:
        return None
    cores = os.cpu_count() or 1
    if workers < 0:
        raise JobError(f"workers: {workers} is negative; use 0 (in-process) or 1 to {MAX_WORKERS_PER_CORE * cores}")
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise JobError(f"workers: {workers} on {cores} cores is more than {MAX_WORKERS_PER_CORE} per core; each "
                         "worker is a process with its own share of the memory, so more only adds overhead "
                         f"(use at most {MAX_WORKERS_PER_CORE * cores}, or a scheduler for a bigger cluster)")
    return workers


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
        recycle_fraction: float | None = 0.7,  # 0 or None: never (see recycle)
    ):
        if scheduler is None:  # an external cluster's own workers and memory are not ours to check
            check_workers(workers)
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.memory_limit = parse_memory(memory_limit)
        self.scheduler = scheduler or None
        self.threads_per_worker = threads_per_worker
        self.retries = retries
        # None: a bar on a terminal, else a line every progress_seconds (see pipeline.progress)
        self.progress = progress
        self.progress_seconds = 30.0
        self.no_worker_timeout = no_worker_timeout
        self.fetch_timeout = fetch_timeout
        self.recycle_fraction = recycle_fraction
        self.recycled = 0  # local workers restarted before a pass (see recycle)
        self.client = None
        self.cluster = None
        self._main_hidden = None

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
        quiet_abandoned_gathers()
        if self.scheduler:
            self.client = Client(self.scheduler, timeout="30s")
        else:
            keep_restarting_nannies()
            self._main_hidden = spawned_without_main()  # for every (re)start of a worker, until close
            self._main_hidden.__enter__()
            self.cluster = LocalCluster(
                env=self.worker_env(),
                n_workers=self.workers,
                threads_per_worker=self.threads_per_worker,
                memory_limit=self.memory_limit,
                processes=True,
                dashboard_address=":0",  # a free port: two jobs on one machine never collide
                silence_logs=logging.CRITICAL,  # failures surface as ShardError
                # each nanny hands this to its worker at every (re)start; see worker_config
                config=self.worker_config(),
            )
            self.client = Client(self.cluster)

    @staticmethod
    def worker_config() -> dict:
        """This process's Dask config with the local workers' memory pause off.

        Dask pauses a worker above 80 % of its memory limit until it frees memory. Our tasks
        hand their results straight back and hold no data a pause could wait out, and a worker
        whose memory kept from earlier tasks stays above the fraction pauses for good and stalls
        the job (seen at 512 MiB: Python, Polars, scikit-learn and dask-ml loaded leave ~330 MiB
        resident). Unpaused, a worker that really runs out is restarted by its nanny (95 %),
        which frees it, and the shard retried. The setting goes to each nanny as its workers'
        config: a worker process takes its nanny's config over its environment, and a config set
        around the cluster's start is gone when a nanny restarts a worker (``recycle``). Whole,
        because a nanny merges it over its own config key by key at the top level only. An
        external cluster's workers are configured by whoever starts them (see docs/scaling.md).
        """
        import copy

        import dask

        with dask.config.set({"distributed.worker.memory.pause": False}):
            return copy.deepcopy(dask.config.config)

    def worker_env(self) -> dict[str, str]:
        """Each local worker gets its share of the cores for Polars, BLAS and OpenMP pools.

        Without it every worker process starts one thread per core, and n workers on n cores
        run n*n threads that fight over the same cores (measured: dedup took 2x the CPU of an
        in-process run). An external cluster's workers are configured by whoever starts them.
        """
        share = str(max(1, (os.cpu_count() or 1) // max(1, self.workers)) * self.threads_per_worker)
        names = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        env = {name: os.environ.get(name, share) for name in names}
        # a user's filters and stages (a job's [[custom]] modules, a script's folder) are on this
        # process's sys.path; the workers import them by name, so they get the same folders
        paths = [*os.environ.get("PYTHONPATH", "").split(os.pathsep), *user_paths()]
        env["PYTHONPATH"] = os.pathsep.join(p for p in dict.fromkeys(paths) if p)
        return env

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        if self._main_hidden is not None:
            self._main_hidden.__exit__(None, None, None)
            self._main_hidden = None

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
        mode = None if self.progress is None else ("bar" if self.progress else "off")
        bar = Progress(desc, total=len(items), unit="shard", mode=mode, interval=self.progress_seconds)
        try:
            if self.local:
                results = []
                for item, label in zip(items, labels, strict=True):
                    results.append(_call_labelled(fn, item, label))
                    bar.update()
                return results
            self.start()
            self.recycle()
            futures = [
                self.client.submit(
                    _call_labelled, fn, item, label, pure=False, retries=self.retries,
                    key=f"{desc}-{i}-{os.urandom(4).hex()}",
                )
                for i, (item, label) in enumerate(zip(items, labels, strict=True))
            ]
            return self._wait(futures, labels, desc, bar)
        finally:
            bar.close()

    def recycle(self) -> int:
        """Restart the idle local workers whose memory is above ``recycle_fraction`` of their limit.

        A worker keeps memory between tasks that never returns to the system: the libraries
        the tasks imported (Polars, scikit-learn, dask-ml: ~330 MiB) and allocator caches. At a
        small memory limit that leaves a pass too little room, and the nanny kills workers
        mid-task (measured at 512 MiB: the report killed a worker 2 times in a run). A fresh
        process costs ~2 s, so only the heavy ones are restarted, between passes, when no task
        of ours runs. Only this engine's own LocalCluster: an external cluster may serve others.
        Returns how many were restarted.
        """
        if self.cluster is None or self.client is None or not self.recycle_fraction:
            return 0
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        heavy = [address for address, w in workers.items()
                 if w.get("memory_limit") and w.get("metrics", {}).get("memory", 0) > self.recycle_fraction * w["memory_limit"]]
        if heavy:
            status = self.client.restart_workers(heavy, timeout=30, raise_for_error=False)
            self.recycled += len(heavy)
            try:  # the pool must be whole again before a pass is sized for it
                if any(v != "OK" for v in status.values()):
                    raise TimeoutError(str(status))
                self.client.wait_for_workers(len(workers), timeout=30)
            except TimeoutError:
                # a nanny that could not restart its worker in time (before
                # keep_restarting_nannies, Dask's cluster closed nannies mid-restart; kept as a
                # safety net): start a whole new cluster instead
                log.warning("restarting workers gave %s; starting a new local cluster", status)
                self.close()
                self.start()
        return len(heavy)

    def _wait(self, futures: list, labels: Sequence[str], desc: str, bar=None) -> list:
        """The futures' results in order, failing instead of waiting forever.

        Fails (cancelling the rest) on the first error, when no worker is alive or every worker
        is paused over its memory limit for ``no_worker_timeout`` s, and when a finished result
        cannot be fetched ``retries`` + 1 times (the worker holding it keeps dying).
        """
        from distributed import wait

        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        pending = set(futures)
        lost: dict[str, int] = {}  # key -> times its finished result could not be fetched
        stuck_since: float | None = None
        try:
            while pending:
                try:
                    done, pending = wait(pending, timeout=5, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                if not done:
                    stuck = self._why_stuck()
                    if stuck is None:
                        stuck_since = None
                    elif stuck_since is None:
                        stuck_since = time.monotonic()
                    elif time.monotonic() - stuck_since > self.no_worker_timeout:
                        what, advice = stuck
                        raise EngineError(f"{desc}: {what} for {self.no_worker_timeout:.0f} s ({self.describe()}); "
                                           f"{advice}finished shards are kept, re-run to resume")
                    continue
                stuck_since = None
                for future in done:
                    if future.status == "error":
                        exc = future.exception()
                        if isinstance(exc, PipelineError):  # a ShardError, or bad input said by the task
                            raise exc
                        if type(exc).__name__ == "KilledWorker":
                            raise ShardError(labels[index[future.key]], self.killed_advice(
                                "the worker running it died every time it tried (killed by its nanny "
                                "over the memory limit, most likely)")) from None
                        raise ShardError(labels[index[future.key]], repr(exc))
                    try:
                        results[index[future.key]] = future.result(timeout=self.fetch_timeout)
                    except TimeoutError:
                        # the worker holding the result died before handing it over (over its
                        # memory limit, typically) and Dask recomputes it; a worker that dies
                        # that way every time would loop forever: stop instead
                        lost[future.key] = lost.get(future.key, 0) + 1
                        if lost[future.key] > self.retries:
                            raise ShardError(labels[index[future.key]], self.killed_advice(
                                f"its result could not be fetched in {lost[future.key]} tries of "
                                f"{self.fetch_timeout:.0f} s: the worker holding it kept dying (over "
                                "its memory limit, most likely)")) from None
                        pending.add(future)
                        continue
                    if bar is not None:
                        bar.update()
        except BaseException:
            self.client.cancel(list(pending))
            raise
        return results

    def killed_advice(self, what: str) -> str:
        """Why a shard's worker died, the memory it had and what to change (the shard is named
        by the ShardError that carries this)."""
        from dask.utils import format_bytes

        if self.scheduler:
            limit = "the memory limit its cluster's workers were started with"
        else:
            limit = format_bytes(self.memory_limit) if isinstance(self.memory_limit, int) else str(self.memory_limit)
            limit = f"memory_limit={limit} per worker, {self.workers} workers"
        return (f"{what}; {limit}. To finish it: raise the limit (--memory-limit, [engine] memory_limit), "
                "or run fewer --workers so each gets a larger share, or cut the input into smaller shards "
                "(fetch's shard_mb) so one task holds less; finished shards are kept, re-run to resume")

    def _why_stuck(self) -> tuple[str, str] | None:
        """(what, advice) when no worker can run a task now (none alive, all paused), or None."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        if not workers:
            return "no Dask worker alive", ""
        if all(w.get("status") == "paused" for w in workers.values()):
            return (f"all {len(workers)} Dask workers paused over their memory limit's pause fraction",
                    "raise the workers' --memory-limit, or start them with "
                    "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE=False (memory they keep from earlier "
                    "tasks never frees); ")
        return None

    @contextmanager
    def watching(self, desc: str):
        """Dask collections computed inside (dask-ml's own ``compute``) wait like ``map`` does.

        Inside, ``dask.compute`` runs on this engine's client through ``_watched_get``: a
        failing task, a cluster without workers or with every worker paused ends in an error,
        not a hang. (The scheduler setting is a module function, not a bound method: a nanny
        that restarts a worker ships the Dask config to it, and a client does not pickle.)
        """
        import dask

        global _WATCHED
        self.start()
        previous, _WATCHED = _WATCHED, (self, desc)
        try:
            with dask.config.set(scheduler=_watched_get):
                yield
        finally:
            _WATCHED = previous

    def _get(self, dsk, keys, desc: str = "compute", **kwargs):
        from dask.core import flatten

        futures = self.client.get(dsk, keys, sync=False, **kwargs)
        flat = list(flatten(futures))
        results = dict(zip([f.key for f in flat], self._wait(flat, [str(f.key) for f in flat], desc),
                           strict=True))

        def pack(item):
            return [pack(i) for i in item] if isinstance(item, list) else results[item.key]

        return pack(futures)

    def run_on_driver(self, fn: Callable[[], R]) -> R:
        """Small global steps that need no worker (kept explicit so stages say what runs where)."""
        return fn()


def keep_restarting_nannies() -> None:
    """Stop a LocalCluster from closing a nanny whose worker is restarting (process-wide).

    When the scheduler drops a worker, the cluster object checks again after
    ``distributed.deploy.lost-worker-timeout`` (15 s) and closes the worker's nanny for good
    if no worker of that name is back, a rule meant for job-queue clusters whose workers
    vanish. A local nanny restarts its worker itself, so the check only does harm: a worker
    restarted twice about 15 s apart (two recycles, or two kills over the memory limit) is
    away at the moment of the check, and its nanny is closed mid-restart. The restart then
    never finishes (seen as 30 s recycle timeouts, reproduced by a test; most likely also the
    x72 scale run's pass that was left with no worker after two memory kills).
    The check is read when a worker is dropped, on the driver, so it is set on the driver
    (and for every LocalCluster in it); a year is "never" for a batch job.
    """
    import dask

    dask.config.set({"distributed.deploy.lost-worker-timeout": "365 days"})


class _DropAllExit(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for distributed's ``AllExit``.

    A result fetch that times out (``_wait``: the worker holding it died) leaves the client's
    gather running; when its future is cancelled the gather ends with ``AllExit``, which
    distributed raises to stop waiting and nobody retrieves, and asyncio prints its traceback
    after our own clear error. Every other exception is logged as before.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ != "AllExit"


def quiet_abandoned_gathers() -> None:
    """Install ``_DropAllExit`` on the asyncio logger (once)."""
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _DropAllExit) for f in asyncio_log.filters):
        asyncio_log.addFilter(_DropAllExit())


_WATCHED: tuple[Engine, str] | None = None
"""The engine (and progress label) of the innermost ``Engine.watching`` block."""


def _watched_get(dsk, keys, **kwargs):
    """The Dask scheduler function inside ``Engine.watching``."""
    if _WATCHED is None:
        raise RuntimeError("dask.compute outside Engine.watching with its scheduler still set")
    engine, desc = _WATCHED
    return engine._get(dsk, keys, desc=desc, **kwargs)
