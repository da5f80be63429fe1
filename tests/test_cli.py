"""The kamigate command as an operator uses it: stock import, reconcile, status, up --demo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from engine.cli.run import default_doors
from engine.store import embedded, keys
from engine.store.embedded import RedisProcess, free_port
from tests.conftest import settings_dict, write_config


def kamigate(*args: str, cwd: Path | None = None, timeout: float = 60,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def _without_config_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "KAMIGATE_CONFIG"}


def _config(tmp_path: Path, url: str) -> Path:
    return write_config(tmp_path / "kamigate.toml", settings_dict(redis={"url": url, "shards": 4}))


async def test_stock_import_then_reconcile(redis: Redis, redis_server: RedisProcess,
                                           tmp_path: Path) -> None:
    cfg = _config(tmp_path, redis_server.url)
    codes = tmp_path / "codes.txt"
    codes.write_text("".join(f"CLI-{i}\n" for i in range(5000)) + "CLI-1\n\n")
    done = kamigate("stock", "import", "card-100", str(codes), "--lot", "cli", "--config",
                    str(cfg))
    assert done.returncode == 0, done.stderr
    assert "added 5000, duplicates 1, invalid 0, available 5000" in done.stdout
    entries = [f for _, f in await redis.xrange(keys.audit())]  # audited like an HTTP import
    assert [(e[b"who"], e[b"action"]) for e in entries] == [(b"cli", b"stock.import")]
    assert json.loads(entries[0][b"details"])["added"] == 5000
    status = kamigate("status", "--config", str(cfg))
    assert status.returncode == 0 and "card-100" in status.stdout and "5000" in status.stdout
    for row in ("workers alive", "order-stream backlog", "backpressure", "maintenance",
                "config", "sha256", "waiting for review", "surge", "pauses", "matching kernel"):
        assert row in status.stdout, status.stdout
    ok = kamigate("reconcile", "--config", str(cfg))
    assert ok.returncode == 0, ok.stdout
    assert "0 violations" in ok.stdout
    # break conservation behind kamigate's back: reconcile must say so and exit 1
    shard = keys.shard_of_sku("card-100", 4)
    await redis.lpop(keys.lot_codes("card-100", "cli", shard))
    bad = kamigate("reconcile", "--config", str(cfg))
    assert bad.returncode == 1
    assert "VIOLATION C1 card-100" in bad.stdout
    assert "CLI-" not in bad.stdout  # codes never appear in reports


def test_csv_import_with_expiry(redis_server: RedisProcess, tmp_path: Path) -> None:
    cfg = _config(tmp_path, redis_server.url)
    csv = tmp_path / "codes.csv"
    csv.write_text("code,expires_at\nE-1,2030-01-01T00:00:00Z\nE-2,not-a-date\nE-3\n")
    done = kamigate("stock", "import", "card-100", str(csv), "--lot", "csv1", "--config",
                    str(cfg))
    assert done.returncode == 0, done.stderr
    assert "added 2, duplicates 0, invalid 1" in done.stdout


def test_commands_say_when_the_embedded_redis_is_not_running(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "k.toml", settings_dict(
        redis={"url": "embedded", "data_dir": str(tmp_path / "data")}))
    done = kamigate("status", "--config", str(cfg))
    assert done.returncode == 1
    assert "is not running" in done.stderr and "kamigate up" in done.stderr


def _get(url: str, key: str | None = None, body: dict[str, Any] | None = None
         ) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_up_demo_serves_orders_end_to_end(tmp_path: Path) -> None:
    """The README's first command: it serves, the other commands find its config, and a
    SIGTERM to its whole process group (a service manager, Ctrl-C) stops it cleanly, Redis
    last."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "up", "--demo", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=_without_config_env(), start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                status, _ = _get(f"{base}/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("kamigate up --demo never became ready")
        # the banner's first line: paid with the demo buyer's points, fulfilled at once
        status, order = _get(f"{base}/v1/orders", "demo-shop-key",
                             {"sku": "steam-cn-100", "qty": 1, "buyer": "alice@example.com",
                              "points": 10000})
        assert status == 201 and order["status"] == "fulfilled" and len(order["codes"]) == 1
        assert order["price"] == {"currency": "CNY", "amount": 10000, "discount": 0,
                                  "points": 10000, "points_value": 10000, "cash_due": 0}
        status, wallet = _get(f"{base}/v1/buyers/alice@example.com/points", "demo-shop-key")
        assert status == 200 and wallet["balance"] == 40000, wallet
        # for cash: held until the payment is confirmed
        status, held = _get(f"{base}/v1/orders", "demo-shop-key",
                            {"sku": "netflix-1m", "qty": 1, "buyer": "bob@example.com"})
        assert status == 201 and held["status"] == "held" and held["price"]["cash_due"] == 3000
        status, paid = _get(f"{base}/v1/orders/{held['order_id']}/confirm", "demo-shop-key",
                            {})
        assert status == 200 and paid["status"] == "fulfilled" and len(paid["codes"]) == 1
        # the welcome coupon, and the rest in points
        status, coupon = _get(f"{base}/v1/buyers/alice@example.com/coupons", "demo-shop-key",
                              {"template": "welcome-10"})
        assert status == 201 and coupon["amount"] == 1000, coupon
        status, order = _get(f"{base}/v1/orders", "demo-shop-key",
                             {"sku": "steam-cn-100", "qty": 1, "buyer": "alice@example.com",
                              "coupons": [coupon["code"]], "points": 9000})
        assert status == 201 and order["status"] == "fulfilled", order
        assert order["price"]["discount"] == 1000 and order["price"]["cash_due"] == 0
        status, skus = _get(f"{base}/admin/skus", "demo-admin-key")
        levels = {s["sku"]: s for s in skus["skus"]}
        assert levels["steam-cn-100"]["issued"] == 2
        assert levels["netflix-1m"]["issued"] == 1
        assert (tmp_path / ".kamigate" / "appendonlydir").exists() or \
            (tmp_path / ".kamigate" / "appendonly.aof").exists()
        # the other commands, run from the same directory, find the demo's config
        status_cmd = kamigate("status", cwd=tmp_path,
                              env={**_without_config_env(), "COLUMNS": "200"})
        assert status_cmd.returncode == 0, status_cmd.stderr
        assert "steam-cn-100" in status_cmd.stdout
        assert ".kamigate/demo.toml" in status_cmd.stderr
        # one front door per usable core by default, all sharing the port
        doors = default_doors()
        deadline = time.monotonic() + 10
        while f"│ front doors alive │ {doors} │" not in " ".join(status_cmd.stdout.split()):
            assert time.monotonic() < deadline, status_cmd.stdout
            time.sleep(0.5)
            status_cmd = kamigate("status", cwd=tmp_path,
                                  env={**_without_config_env(), "COLUMNS": "200"})
        assert kamigate("reconcile", cwd=tmp_path, env=_without_config_env()).returncode == 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "curl -s -H 'Authorization: Bearer demo-shop-key'" in out
    assert '"buyer":"alice@example.com","points":10000}' in out  # pays with points
    assert '"coupons":["<code>"],"points":9000}' in out  # and with a coupon
    assert "demo points: 50000 for alice@example.com" in out
    assert f"({doors} front-door process" in out
    assert proc.returncode == 0, out
    assert "Redis unreachable" not in out and "Traceback" not in out, out
    assert embedded.running_url(tmp_path / ".kamigate") is None  # stopped, last


def test_the_default_door_count_follows_the_usable_cores() -> None:
    """A process held to one core (taskset, a container's cpuset) starts one door."""
    probe = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
             "from engine.cli.run import default_doors; print(default_doors())")
    one = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert one.stdout.strip() == "1"
    assert default_doors() == min(len(os.sched_getaffinity(0)), 8)


def test_up_with_no_door_says_so() -> None:
    result = kamigate("up", "--processes", "0", timeout=30)
    assert result.returncode == 1 and "--processes must be at least 1" in result.stderr


def test_up_on_a_port_in_use_says_so_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = kamigate("up", "--demo", "--port", str(port), cwd=tmp_path,
                          env=_without_config_env(), timeout=30)
    assert result.returncode == 1
    assert f"port {port} is in use" in result.stderr and "--port N" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert embedded.running_url(tmp_path / ".kamigate") is None  # no Redis left behind


async def test_status_and_reconcile_show_points(redis: Redis, redis_server: RedisProcess,
                                                tmp_path: Path) -> None:
    from engine.clock import now_ms
    from engine.wallet import ledger

    cfg = write_config(tmp_path / "kamigate.toml", settings_dict(
        redis={"url": redis_server.url, "shards": 4}, points={"per_unit": 100},
        skus=[{"id": "card-100", "price": 1000}]))
    await ledger.move(redis, 4, "shop-a", "buyer-one@example.com", 1500, "grant", "t", 0,
                      now_ms())
    await ledger.move(redis, 4, "shop-b", "buyer-two", 700, "grant", "t", 0, now_ms())
    await ledger.reserve(redis, 4, "shop-a", "buyer-one@example.com", "o_0001aaaaaaaaaaaaaaaa",
                         400, now_ms())
    status = kamigate("status", "--config", str(cfg))
    assert status.returncode == 0, status.stderr
    lines = {" ".join(line.split()) for line in status.stdout.splitlines()}
    for row in ("│ wallets │ 2 │", "│ outstanding (balance owed to buyers) │ 1,800 │",
                "│ reserved for undecided orders │ 400 │", "│ granted │ 2,200 │",
                "│ reservations not yet settled │ 1 │", "│ of those, older than 5 min │ 0 │"):
        assert row in lines, status.stdout
    ok = kamigate("reconcile", "--config", str(cfg))
    assert ok.returncode == 0 and "2 wallets" in ok.stdout, ok.stdout
    w = ledger.wallet_keys("shop-a", "buyer-one@example.com", 4)[1]
    await redis.hincrby(w.counts, "balance", 50)  # points out of nowhere
    bad = kamigate("reconcile", "--config", str(cfg))
    assert bad.returncode == 1 and "VIOLATION P1 wallet shop-a/" in bad.stdout, bad.stdout
    assert "buyer-one" not in bad.stdout  # buyer ids never appear in reports
