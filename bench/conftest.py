"""Kernel benchmarks: `pytest bench` (bench/ is not in the default test paths)."""

from __future__ import annotations

from engine.worker import matching


def pytest_report_header() -> str:
    """Say which kernel the switch picked, so a run without the compiled one is obvious."""
    return matching.describe()
