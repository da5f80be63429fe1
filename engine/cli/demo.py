"""The embedded demo: a config with one storefront, an admin, two SKUs, and stock to sell."""

from __future__ import annotations

import secrets
from pathlib import Path

from engine.config.settings import sha256_hex

STOREFRONT_KEY = "demo-shop-key"
ADMIN_KEY = "demo-admin-key"
SKUS = {"steam-cn-100": 200, "netflix-1m": 50}


def config_text(data_dir: str, port: int) -> str:
    return f"""# kamigate demo config (written by `kamigate up --demo`)
[server]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"

[redis]
url = "embedded"
shards = 4
data_dir = "{data_dir}"

[[storefronts]]
id = "demo-shop"
key_sha256 = "{sha256_hex(STOREFRONT_KEY)}"

[[admins]]
id = "demo-ops"
role = "admin"
key_sha256 = "{sha256_hex(ADMIN_KEY)}"

[[skus]]
id = "steam-cn-100"
max_qty = 10
buyer_limit = 5

[[skus]]
id = "netflix-1m"
max_qty = 2
on_sold_out = "reject"
"""


def write_config(data_dir: str, port: int) -> Path:
    path = Path(data_dir) / "demo.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_text(data_dir, port), encoding="utf-8")
    return path


def codes(sku: str, n: int) -> list[str]:
    prefix = sku.upper().replace("-", "")[:6]
    return [f"{prefix}-{secrets.token_hex(6).upper()}" for _ in range(n)]


def curl_lines(base: str) -> str:
    auth = f"-H 'Authorization: Bearer {STOREFRONT_KEY}'"
    admin = f"-H 'Authorization: Bearer {ADMIN_KEY}'"
    return "\n".join([
        "# buy one code:",
        f"curl -s {auth} -H 'Content-Type: application/json' "
        f"-d '{{\"sku\":\"steam-cn-100\",\"qty\":1,\"buyer\":\"alice@example.com\"}}' "
        f"{base}/v1/orders",
        "# stock levels:",
        f"curl -s {admin} {base}/admin/skus",
        "# add stock:",
        f"printf 'CODE-1\\nCODE-2\\n' | curl -s {admin} -H 'Content-Type: text/plain' "
        f"--data-binary @- '{base}/admin/skus/netflix-1m/stock?lot=restock1'",
        "# metrics:",
        f"curl -s {base}/metrics | grep kamigate_",
    ])
