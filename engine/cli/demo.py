"""The embedded demo: a config with one storefront, an admin, two priced SKUs, stock to sell,
a coupon template, and a buyer with points to pay with."""

from __future__ import annotations

import secrets
from pathlib import Path

from engine.config.settings import sha256_hex

STOREFRONT_KEY = "demo-shop-key"
ADMIN_KEY = "demo-admin-key"
SKUS = {"steam-cn-100": 200, "netflix-1m": 50}
BUYER = "alice@example.com"
WELCOME_POINTS = 50_000  # 500.00 CNY at 100 points a yuan: five steam-cn-100 cards


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

[pricing]
currency = "CNY"
payment_hold_s = 900        # an order with cash to pay waits this long for /confirm

[points]
per_unit = 100              # 100 points pay 1.00 CNY
earn_per_unit = 1           # 1 point earned per yuan paid in cash
expire_after_days = 730

[[coupon_templates]]
id = "welcome-10"
kind = "amount"
amount = 1000               # 10.00 CNY off
per_buyer = 1
valid_days = 30

[[skus]]
id = "steam-cn-100"
price = 10000               # 100.00 CNY, in fen
max_qty = 10
buyer_limit = 5

[[skus]]
id = "netflix-1m"
price = 3000
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
    json = "-H 'Content-Type: application/json'"
    return "\n".join([
        f"# buy one code, paid with {BUYER}'s points (fulfilled at once, codes in the answer):",
        f"curl -s {auth} {json} -d '{{\"sku\":\"steam-cn-100\",\"qty\":1,"
        f"\"buyer\":\"{BUYER}\",\"points\":10000}}' {base}/v1/orders",
        "# the buyer's points, and their history:",
        f"curl -s {auth} {base}/v1/buyers/{BUYER}/points",
        f"curl -s {auth} {base}/v1/buyers/{BUYER}/points/history",
        "# buy one for cash: held until the shop confirms the payment "
        "(then POST /v1/orders/<order_id>/confirm):",
        f"curl -s {auth} {json} -d '{{\"sku\":\"netflix-1m\",\"qty\":1,"
        f"\"buyer\":\"bob@example.com\"}}' {base}/v1/orders",
        f"# issue {BUYER} the welcome coupon (once: per_buyer = 1), then list it:",
        f"curl -s {auth} {json} -d '{{\"template\":\"welcome-10\"}}' "
        f"{base}/v1/buyers/{BUYER}/coupons",
        f"curl -s {auth} {base}/v1/buyers/{BUYER}/coupons",
        "# pay with the coupon (its code from above) and points for the rest:",
        f"curl -s {auth} {json} -d '{{\"sku\":\"steam-cn-100\",\"qty\":1,"
        f"\"buyer\":\"{BUYER}\",\"coupons\":[\"<code>\"],\"points\":9000}}' "
        f"{base}/v1/orders",
        "# stock levels:",
        f"curl -s {admin} {base}/admin/skus",
        "# add stock:",
        f"printf 'CODE-1\\nCODE-2\\n' | curl -s {admin} -H 'Content-Type: text/plain' "
        f"--data-binary @- '{base}/admin/skus/netflix-1m/stock?lot=restock1'",
        "# metrics:",
        f"curl -s {base}/metrics | grep kamigate_",
    ])
