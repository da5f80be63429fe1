"""The locust scenarios run headless against a real engine and end with the right exit code
(kept short here; the README gives the full-length commands)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engine.store import keys
from tests.conftest import (
    ADMIN_KEY,
    OPERATOR_KEY,
    SHOP_A_KEY,
    Engine,
    EngineFactory,
    auth,
    codes,
    make_settings,
    settings_dict,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent
HOOK_SECRET = "hook-secret-of-at-least-32-characters"


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


@pytest.mark.slow
async def test_maintenance_toggle_scenario_reopens_and_loses_no_order(
        engine: Engine, redis: Redis) -> None:
    await engine.import_codes("card-100", codes("MAINT", 500))
    code, out = await _locust(engine, "maintenance_toggle", "-u", "9", "-r", "9", "-t", "9s",
                              KAMIGATE_OPERATOR_KEY=OPERATOR_KEY, KAMIGATE_SETTLE_S="10",
                              KAMIGATE_MAX_P99_MS="2000")
    assert code == 0, out[-3000:]
    found = re.search(r"maintenance toggle: 2 windows \(global [\d.]+ s, sku:card-100 [\d.]+ s\), "
                      r"(\d+) answers 503 maintenance \(expected\), 0 stray; (\d+) orders "
                      r"admitted, (\d+) read back, 0 lost, 0 pending", out)
    assert found, out[-3000:]
    expected_503, admitted, read_back = map(int, found.groups())
    assert expected_503 > 0 and admitted > 0 and read_back == admitted
    assert "maintenance off, no admitted order lost" in out
    # the windows really happened, and ended: read_only then off, global and scoped
    actions = [json.loads(fields[b"details"]) for _, fields in await redis.xrange(keys.audit())
               if fields[b"action"] == b"maintenance"]
    assert [(a["scope"], a["mode"]) for a in actions] == [
        ("global", "read_only"), ("global", "off"),
        ("sku:card-100", "read_only"), ("sku:card-100", "off")]
    assert await redis.hlen(keys.maintenance_scoped()) == 0
    status = await engine.http.get("/status", headers={"Accept": "application/json"})
    assert (await status.json())["maintenance"] is None


@pytest.mark.slow
async def test_config_reload_scenario_changes_and_restores_the_config(
        engine: Engine, tmp_path: Path) -> None:
    await engine.import_codes("card-100", codes("RELOAD", 500))
    before = await (await engine.http.get("/admin/config", headers=auth(ADMIN_KEY))).json()
    path = write_config(tmp_path / "kamigate.toml", settings_dict())
    code, out = await _locust(engine, "config_reload", "-u", "6", "-r", "6", "-t", "8s",
                              KAMIGATE_CONFIG=str(path), KAMIGATE_RELOAD_EVERY_S="1.5",
                              KAMIGATE_MAX_P99_MS="2000")
    assert code == 0, out[-3000:]
    found = re.search(r"config reload: (\d+) versions applied", out)
    assert found and int(found.group(1)) >= 3, out[-3000:]
    assert "0 not visible, 0 5xx" in out and "original config restored" in out
    after = await (await engine.http.get("/admin/config", headers=auth(ADMIN_KEY))).json()
    assert after["sha256"] == before["sha256"]
    assert after["version"] >= before["version"] + int(found.group(1))
    [sku] = [s for s in after["config"]["skus"] if s["id"] == "card-100"]
    assert sku["max_qty"] == 10


@pytest.mark.slow
async def test_config_reload_scenario_puts_back_what_get_shows_and_refuses_a_stale_file(
        engine_factory: EngineFactory, redis: Redis, tmp_path: Path) -> None:
    raw = settings_dict()
    raw["storefronts"][0]["webhook_secret"] = HOOK_SECRET
    engine = await engine_factory(make_settings(**raw))
    await engine.import_codes("card-100", codes("RELOAD", 200))
    before = await (await engine.http.get("/admin/config", headers=auth(ADMIN_KEY))).json()
    # secrets read "***" in GET /admin/config; PUT back, they keep their running values
    code, out = await _locust(engine, "config_reload", "-u", "2", "-r", "2", "-t", "5s",
                              KAMIGATE_RELOAD_EVERY_S="1.5", KAMIGATE_MAX_P99_MS="2000")
    assert code == 0 and "original config restored" in out, out[-3000:]
    stored = json.loads(await redis.hget(keys.config(), "document"))
    assert stored["storefronts"][0]["webhook_secret"] == HOOK_SECRET
    assert stored["storefronts"][0]["key_sha256"] == raw["storefronts"][0]["key_sha256"]
    before = await (await engine.http.get("/admin/config", headers=auth(ADMIN_KEY))).json()
    # a file that is not what runs would change the fleet when put back
    raw["skus"][0]["max_qty"] = 7
    path = write_config(tmp_path / "kamigate.toml", raw)
    code, out = await _locust(engine, "config_reload", "-u", "2", "-r", "2", "-t", "5s",
                              KAMIGATE_CONFIG=str(path))
    assert code == 1 and "skus[0].max_qty differs" in out, out[-3000:]
    after = await (await engine.http.get("/admin/config", headers=auth(ADMIN_KEY))).json()
    assert (after["version"], after["sha256"]) == (before["version"], before["sha256"])
