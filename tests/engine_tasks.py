"""Module-level functions the engine tests ship to worker processes (they pickle by name)."""


def square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError(f"cannot take item {x}")
    return x * x



def big_result(megabytes: int):
    """A result larger than a small worker's memory limit (pages touched, so it is resident)."""
    import numpy as np

    return np.ones(megabytes * 2**20, dtype=np.uint8)
