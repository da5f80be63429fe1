"""Process settings for the long-running commands (front door, worker)."""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Fewer, later collections: every request allocates short-lived objects that die young.

    Objects alive at start-up (modules, config, compiled decoders) are moved out of the
    collector's view with gc.freeze(), so a collection walks only what the traffic made.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
