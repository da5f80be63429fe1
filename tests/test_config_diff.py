"""`kamigate config diff OLD NEW`: effective settings by dotted key, secrets hidden, and
whether a live reload can apply the change."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from tests.conftest import settings_dict, write_config


def _files(tmp_path: Path, old: dict[str, Any], new: dict[str, Any]) -> tuple[str, str]:
    return (str(write_config(tmp_path / "old.toml", old)),
            str(write_config(tmp_path / "new.toml", new)))


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["config", "diff", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_identical_files_say_no_changes(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    old, new = _files(tmp_path, settings_dict(), settings_dict())
    assert _run(capsys, old, new) == (0, "no changes\n", "")


def test_changes_by_dotted_key_and_list_items_by_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_OLD", "old-hook-secret" * 3)
    monkeypatch.setenv("HOOK_NEW", "new-hook-secret" * 3)
    old = settings_dict(limits={"global": {"rate": 800, "burst": 1600}},
                        pauses=[{"scope": "global", "starts_at": "2099-01-01T00:00:00Z"}])
    old["storefronts"][0]["webhook_secret"] = "env:HOOK_OLD"
    new = copy.deepcopy(old)
    new["limits"]["global"]["rate"] = 1000
    new["limits"]["per_buyer"] = {"rate": 2, "burst": 5}
    new["skus"][0]["max_qty"] = 20
    new["skus"].append({"id": "new-sku", "max_qty": 3})
    new["skus"] = [s for s in new["skus"] if s["id"] != "card-reject"]
    new["skus"].reverse()  # order alone is no change for lists keyed by id
    new["pauses"] = [{"scope": "sku:card-100", "starts_at": "2099-02-01T00:00:00Z"}]
    new["storefronts"][0]["webhook_secret"] = "env:HOOK_NEW"
    new["storefronts"][1]["webhook_secret"] = "plain-secret" * 3
    new["orders"]["default_wait_ms"] = 500
    code, out, err = _run(capsys, *_files(tmp_path, old, new))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert "orders.default_wait_ms: 2000 → 500" in lines
    assert "limits.global.rate: 800 → 1000" in lines
    assert "limits.per_buyer: (none) → {rate = 2, burst = 5}" in lines
    assert "storefronts[shop-a].webhook_secret: *** → *** (changed)" in lines
    assert 'storefronts[shop-b].webhook_secret: "" → ***' in lines
    assert "skus[card-100].max_qty: 10 → 20" in lines
    assert "- skus[card-reject]" in lines
    assert [line for line in lines if line.startswith("+ skus[new-sku] = {")]
    assert 'max_qty = 3' in next(line for line in lines if line.startswith("+ skus[new-sku]"))
    assert [line for line in lines if line.startswith('- pauses[0] = {scope = "global"')]
    assert [line for line in lines if line.startswith('+ pauses[0] = {scope = "sku:card-100"')]
    assert not [line for line in lines if "card-limited" in line]  # untouched, though moved
    assert "secret" not in out.replace("webhook_secret", "")  # no secret value printed
    assert lines[-1] == f"{len(lines) - 1} changes; a live reload can apply this " \
        "(PUT /admin/config, POST /admin/config/reload, SIGHUP or a file edit)"


def test_restart_only_keys_are_named(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    old = settings_dict()
    new = settings_dict(redis={"shards": 8}, server={"port": 9999})
    code, out, _ = _run(capsys, *_files(tmp_path, old, new))
    assert code == 0
    lines = out.splitlines()
    assert "redis.shards: 4 → 8" in lines and "server.port: 8080 → 9999" in lines
    assert lines[-1] == "2 changes; a restart is needed for: redis.shards, server.port " \
        "(a live reload refuses this file)"


def test_an_invalid_file_lists_its_errors_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    bad = settings_dict(orders={"default_wait_ms": "soon", "bogus": 1})
    old, new = _files(tmp_path, settings_dict(), bad)
    code, out, err = _run(capsys, old, new)
    assert code == 1 and out == ""
    assert f"kamigate: {new} is not a usable config:" in err
    assert "  - orders.default_wait_ms: Expected `int`, got `str`" in err
    assert "  - orders.bogus: unknown key" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[orders\n")
    code, _, err = _run(capsys, str(broken), str(tmp_path / "missing.toml"))
    assert code == 1
    assert f"kamigate: {broken} is not a usable config:" in err  # both files reported
    assert "(toml)" in err and "cannot read" in err
