"""The locust scenarios run headless against a real engine and end with the right exit code
(kept short here; the README gives the full-length commands)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, SHOP_A_KEY, Engine, codes

ROOT = Path(__file__).resolve().parent.parent


async def _locust(engine: Engine, scenario: str, *args: str, **env: str) -> tuple[int, str]:
    host = str(engine.http.make_url("")).rstrip("/")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "locust", "-f", f"loadtests/{scenario}.py", "--headless",
        "--host", host, "--only-summary", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "KAMIGATE_KEY": SHOP_A_KEY, "KAMIGATE_ADMIN_KEY": ADMIN_KEY,
             "KAMIGATE_SKU": "card-100", **env},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.slow
async def test_steady_scenario_meets_its_slo(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("LOAD", 500))
    code, out = await _locust(engine, "steady", "-u", "5", "-r", "5", "-t", "3s")
    assert code == 0, out[-2000:]
    assert "SLO met" in out


@pytest.mark.slow
async def test_flash_sale_scenario_checks_nothing_was_oversold(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("SPIKE", 100))
    code, out = await _locust(engine, "flash_sale", KAMIGATE_SHAPE_SCALE="0.1",
                              KAMIGATE_MAX_P99_MS="5000")
    assert code == 0, out[-2000:]
    assert "nothing oversold" in out


@pytest.mark.slow
async def test_slo_miss_fails_the_run(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("MISS", 50))
    code, out = await _locust(engine, "steady", "-u", "2", "-r", "2", "-t", "2s",
                              KAMIGATE_MAX_P99_MS="0.001")
    assert code == 1 and "SLO missed" in out
