"""Module-level functions the engine tests ship to worker processes (they pickle by name)."""


def square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError(f"cannot take item {x}")
    return x * x

