"""Process-wide switches read once from the environment."""

from __future__ import annotations

import os

NO_EXTENSIONS = bool(os.environ.get("KAMIGATE_NO_EXTENSIONS"))
