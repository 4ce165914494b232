"""Constructor-argument checks shared by the representation models (clear ValueErrors)."""

import numbers

import torch


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_non_negative_int(name: str, value) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_cutoffs(cutoff_lower, cutoff_upper) -> tuple[float, float]:
    try:
        lower, upper = float(cutoff_lower), float(cutoff_upper)
    except (TypeError, ValueError):
        raise ValueError(
            f"cutoffs must be numbers, got cutoff_lower={cutoff_lower!r}, "
            f"cutoff_upper={cutoff_upper!r}"
        ) from None
    if not (0.0 <= lower < upper) or upper == float("inf"):
        raise ValueError(
            f"need 0 <= cutoff_lower < cutoff_upper < inf, got cutoff_lower={lower}, "
            f"cutoff_upper={upper}"
        )
    return lower, upper


def check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(choices)}")
    return value
