"""Pick the matching kernel: the compiled one unless KAMIGATE_NO_EXTENSIONS is set or it is absent.

Both stay importable by name for tests: `match_batch_py` always, `match_batch_c` when built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine._compat import NO_EXTENSIONS
from engine.worker.matching_py import match_batch as match_batch_py

match_batch = match_batch_py
IMPLEMENTATION = "python"

if not TYPE_CHECKING:
    try:
        from engine.worker._matching_c import match_batch as match_batch_c
    except ImportError:
        match_batch_c = None
    else:
        if not NO_EXTENSIONS:
            match_batch = match_batch_c
            IMPLEMENTATION = "compiled"


def describe() -> str:
    """One line saying which kernel runs."""
    if IMPLEMENTATION == "compiled":
        return "matching kernel: compiled (Cython)"
    why = "KAMIGATE_NO_EXTENSIONS is set" if NO_EXTENSIONS else "compiled kernel not built"
    return f"matching kernel: pure Python ({why})"
