"""Loading a config: TOML text or a decoded document, checked, as Settings or ConfigError."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.config.settings import Settings


class ConfigError(Exception):
    """A config that cannot be used; `errors` lists every problem as `key: message`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def from_mapping(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Validate a decoded config document; raise ConfigError listing every problem."""
    from engine.config.check import check

    env = os.environ if environ is None else environ
    parts, errors = check(raw, env)
    if errors:
        raise ConfigError(errors)
    return Settings(**parts)


def parse_toml(text: str, environ: Mapping[str, str] | None = None) -> Settings:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"(toml): {exc}"]) from None
    return from_mapping(raw, environ)


def load(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a TOML config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"(file): cannot read {path}: {exc}"]) from None
    return parse_toml(text, environ)
