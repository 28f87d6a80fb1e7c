"""Editor: summaries of repeated benchmark runs (median, range, percentiles).

Pure functions, no I/O. Percentiles interpolate linearly between the two
nearest ranks (numpy's default), so p50 of an even count is the mean of the
middle pair, and a single sample is its own p50 and p95.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``; ValueError when empty."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """{"median", "min", "max", "p95", "n", "runs"} of one figure's runs."""
    return {
        "median": percentile(values, 50),
        "min": min(values),
        "max": max(values),
        "p95": percentile(values, 95),
        "n": len(values),
        "runs": list(values),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the divisor is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator
