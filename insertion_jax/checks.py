"""Config value checks shared by every config dataclass.

Each raises ValueError naming `Owner.field=value` and what is allowed.
"""

from __future__ import annotations


def positive(owner: str, **values) -> None:
    """Each value must be > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f'{owner}.{name}={value!r} must be > 0.')


def non_negative(owner: str, **values) -> None:
    """Each value must be >= 0."""
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f'{owner}.{name}={value!r} must be >= 0.')


def positive_int(owner: str, **values) -> None:
    """Each value must be an int > 0."""
    for name, value in values.items():
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f'{owner}.{name}={value!r} must be a positive integer.')


def positive_ints(owner: str, **values) -> None:
    """Each value must be a non-empty sequence of ints > 0 (layer widths)."""
    for name, value in values.items():
        if not value or any(not (isinstance(v, int) and v > 0) for v in value):
            raise ValueError(
                f'{owner}.{name}={value!r} must be a non-empty sequence of positive integers.'
            )


def unit_interval(owner: str, **values) -> None:
    """Each value must lie in [0, 1]."""
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f'{owner}.{name}={value!r} must be in [0, 1].')


def one_of(owner: str, name: str, value, allowed) -> None:
    """`value` must be one of `allowed`."""
    if value not in allowed:
        raise ValueError(
            f'{owner}.{name}={value!r} is not allowed; choose one of: '
            f'{", ".join(map(str, allowed))}.'
        )


def tuples_from_json(d):
    """`d` with every list value turned into a tuple: JSON writes a config's
    tuple fields as lists, and frozen configs compare by value."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
