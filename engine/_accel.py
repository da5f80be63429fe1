"""The front door's hot path, compiled: setup.py has Cython translate these modules from their
own source and builds each next to it (no second copy of the code to keep in step); Python
then imports the compiled module first. `KAMIGATE_NO_EXTENSIONS=1` runs their source instead,
the pure twin, as the matching kernel's switch does. In a source tree a module edited after
its build also runs from its source, so a stale build never shadows newer code.

This module imports nothing of the engine: setup.py reads DOOR_MODULES from it before the
engine's dependencies are installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

DOOR_MODULES = (
    "engine.controls.token_bucket",
    "engine.door.admission",
    "engine.door.ingest",
    "engine.door.replies",
    "engine.http.auth",
    "engine.http.codec",
    "engine.http.notices",
    "engine.http.orders",
    "engine.http.placement",
    "engine.http.placing",
    "engine.http.problems",
    "engine.views",
)

_SOURCE_TREE = (Path(__file__).resolve().parent.parent / "setup.py").exists()


def _no_extensions() -> bool:
    return bool(os.environ.get("KAMIGATE_NO_EXTENSIONS"))


class _SourceWhenAsked(importlib.abc.MetaPathFinder):
    """Finds a door module's source in place of its compiled build when extensions are
    switched off, or when the source is newer than the build (in a source tree)."""

    def __init__(self, modules: Sequence[str] = DOOR_MODULES,
                 source_tree: bool = _SOURCE_TREE) -> None:
        self.modules = frozenset(modules)
        self.source_tree = source_tree

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        origin = spec.origin if spec is not None else None
        if origin is None or not origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            return None  # not built: the usual finders import the source
        source = Path(origin).with_name(fullname.rpartition(".")[2] + ".py")
        if not source.exists():
            return None
        stale = self.source_tree and source.stat().st_mtime > Path(origin).stat().st_mtime
        if _no_extensions() or stale:
            return importlib.util.spec_from_file_location(fullname, source)
        return None


def install() -> None:
    if not any(isinstance(finder, _SourceWhenAsked) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceWhenAsked())


def compiled() -> list[str]:
    """The door modules that run compiled in this process (importing them)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [name for name in DOOR_MODULES
            if str(importlib.import_module(name).__file__ or "").endswith(suffixes)]


def describe() -> str:
    """One line saying how the front door runs."""
    found = compiled()
    if len(found) == len(DOOR_MODULES):
        return "front door: compiled (Cython)"
    if _no_extensions():
        return "front door: pure Python (KAMIGATE_NO_EXTENSIONS is set)"
    if not found:
        return "front door: pure Python (not built)"
    return f"front door: {len(found)} of {len(DOOR_MODULES)} modules compiled (rebuild: pip " \
           "install -e .)"
