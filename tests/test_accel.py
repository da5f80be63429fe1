"""The front door compiled from its own source (engine/_accel.py): which one runs, and when
the source runs instead."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import _accel

ENGINE = Path(_accel.__file__).resolve().parent
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
PROBE = ("import json; from engine import _accel; "
         "print(json.dumps([__import__(m, fromlist=['_']).__file__ for m in _accel.DOOR_MODULES]))")


def _files(no_extensions: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "KAMIGATE_NO_EXTENSIONS"}
    if no_extensions:
        env["KAMIGATE_NO_EXTENSIONS"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout
    found: list[str] = json.loads(out)
    return found


def _built() -> bool:
    return all(ENGINE.parent.joinpath(*m.split(".")).with_suffix(SUFFIX).exists()
               for m in _accel.DOOR_MODULES)


def test_the_switch_runs_the_door_from_its_source() -> None:
    assert all(f.endswith(".py") for f in _files(no_extensions=True))


def test_a_built_door_runs_compiled() -> None:
    if not _built():
        pytest.skip("the front door is not compiled in this install (no C compiler, or "
                    "built with KAMIGATE_NO_EXTENSIONS)")
    if os.environ.get("KAMIGATE_NO_EXTENSIONS"):
        pytest.skip("KAMIGATE_NO_EXTENSIONS is set: the source is expected")
    files = _files(no_extensions=False)
    assert all(f.endswith(SUFFIX) for f in files), files
    assert _accel.describe() == "front door: compiled (Cython)"


def test_a_source_newer_than_its_build_wins(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The finder's decision on a package of its own: the build wins unless the source was
    edited after it (in a source tree) or extensions are switched off."""
    monkeypatch.delenv("KAMIGATE_NO_EXTENSIONS", raising=False)
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source, build = package / "door.py", package / f"door{SUFFIX}"
    source.write_text("WHERE = 'source'\n")
    build.write_bytes(b"a build")
    finder = _accel._SourceWhenAsked(["fakepkg.door"], source_tree=True)

    def decided() -> str | None:
        spec = finder.find_spec("fakepkg.door", [str(package)])
        return None if spec is None else spec.origin

    os.utime(source, (1_000, 1_000))
    os.utime(build, (2_000, 2_000))
    assert decided() is None  # the usual finder imports the build
    monkeypatch.setenv("KAMIGATE_NO_EXTENSIONS", "1")
    assert decided() == str(source)
    monkeypatch.delenv("KAMIGATE_NO_EXTENSIONS")
    os.utime(source, (3_000, 3_000))  # edited after the build
    assert decided() == str(source)
    assert _accel._SourceWhenAsked(["fakepkg.door"], source_tree=False).find_spec(
        "fakepkg.door", [str(package)]) is None  # an installed package: the build stands
    assert finder.find_spec("fakepkg.other", [str(package)]) is None
