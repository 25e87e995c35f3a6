"""Module-level functions the engine tests ship to worker processes (they pickle by name)."""


def square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError(f"cannot take item {x}")
    return x * x



def big_result(megabytes: int):
    """A result larger than a small worker's memory limit (pages touched, so it is resident)."""
    import numpy as np

    return np.ones(megabytes * 2**20, dtype=np.uint8)


def allocate(megabytes: int) -> int:
    """Touch more memory than a small worker may hold while computing (its nanny kills it)."""
    import numpy as np

    block = np.ones(megabytes * 2**20, dtype=np.uint8)
    return int(block[::4096].sum())


HELD: list = []


def hold_memory(fraction: float) -> int:
    """Take this worker's resident memory to `fraction` of its limit and keep it (as memory a
    worker retains from earlier tasks would be). Returns the resident bytes."""
    import numpy as np
    import psutil
    from distributed import get_worker

    limit = get_worker().memory_manager.memory_limit
    extra = int(fraction * limit) - psutil.Process().memory_info().rss
    if extra > 0:
        HELD.append(np.ones(extra, dtype=np.uint8))
    return psutil.Process().memory_info().rss
