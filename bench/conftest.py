"""Kernel benchmarks: run with `pytest bench` (bench/ is not in the default test paths)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from engine import matching
from engine.matching_types import Decision, MatchOrder, SkuBook

Kernel = Callable[[Sequence[MatchOrder], Mapping[str, SkuBook]], list[Decision]]

# impl id -> kernel; "c" is None when the compiled kernel is not built.
KERNELS: dict[str, Kernel | None] = {
    "py": matching.match_batch_py,
    "c": matching.match_batch_c,
}
