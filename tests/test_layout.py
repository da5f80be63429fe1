"""The rooms of engine/ (engine/__init__.py): a room imports only rooms below it, the shared
vocabulary stays small, and no module grows past what one reader holds in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "engine"

# Rank of each room; a module may import its own room and rooms of a lower rank only.
RANKS = {
    "cli": 6,
    "http": 5,
    "door": 4,
    "worker": 4,
    "wallet": 3,
    "stock": 3,
    "controls": 3,
    "config": 2,
    "store": 1,
    "lua": 0,
    "": 0,  # the shared vocabulary at engine/ itself
}
MAX_ROOT_MODULES = 12
MAX_LINES = 350


def _room(module: str) -> str:
    """`engine.worker.book` -> `worker`; `engine.wire` -> "" (the vocabulary)."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (ENGINE / parts[1]).is_dir()):
        return parts[1]
    return ""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """Every engine module the file imports, wherever the import statement stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("engine")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("engine"):
            # `from engine import x` names a module of the vocabulary or a room package
            found += ([f"engine.{a.name}" for a in node.names] if node.module == "engine"
                      else [node.module])
    return found


SOURCES = sorted(p for p in ENGINE.rglob("*.py") if p.name != "__main__.py")


def test_every_module_lives_in_a_known_room() -> None:
    rooms = {p.name for p in ENGINE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set(RANKS) - {""}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ENGINE)))
def test_a_room_imports_only_rooms_below_it(path: Path) -> None:
    here = _room(_module_name(path))
    upward = [
        name for name in _imports(path)
        if name != "engine" and _room(name) != here and RANKS[_room(name)] >= RANKS[here]
    ]
    assert not upward, f"{path.relative_to(ENGINE)} ({here or 'vocabulary'}) reaches up: {upward}"


def test_the_vocabulary_stays_small() -> None:
    root = [p.name for p in ENGINE.glob("*.py")]
    assert len(root) <= MAX_ROOT_MODULES, sorted(root)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ENGINE)))
def test_modules_stay_readable(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ENGINE)} has {lines} lines"


def test_no_name_stutters() -> None:
    """No `stock/stock.py`: a module is not named after the room it is in."""
    stutter = [p for p in ENGINE.rglob("*.py") if p.stem == p.parent.name]
    assert not stutter
