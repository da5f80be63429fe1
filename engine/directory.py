"""Lookups the front door does on every request, built once per config: keys, SKUs, shards."""

from __future__ import annotations

import hashlib
import hmac

from engine import keys
from engine.config import Admin, Settings, Sku, Storefront

ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}


class Directory:
    """Indexes over one Settings value; replaced whole when the config changes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storefronts: dict[str, Storefront] = {s.key_sha256: s for s in settings.storefronts}
        self.admins: dict[str, Admin] = {a.key_sha256: a for a in settings.admins}
        self.skus: dict[str, Sku] = {s.id: s for s in settings.skus}
        shards = settings.redis.shards
        self.shard_by_sku: dict[str, int] = {
            s.id: keys.shard_of_sku(s.id, shards) for s in settings.skus
        }
        secret = settings.server.page_secret or "".join(
            ["kamigate-page", *sorted(self.storefronts), *sorted(self.admins)]
        )
        self.page_key = hashlib.sha256(secret.encode()).digest()

    def principal(self, bearer: str) -> Storefront | Admin | None:
        digest = hashlib.sha256(bearer.encode()).hexdigest()
        found: Storefront | Admin | None = self.storefronts.get(digest) or self.admins.get(digest)
        if found is not None and hmac.compare_digest(found.key_sha256, digest):
            return found
        return None

    def page_token(self, order_id: str) -> str:
        return hmac.new(self.page_key, order_id.encode(), hashlib.sha256).hexdigest()[:24]

    def page_path(self, order_id: str) -> str:
        return f"/q/{order_id}?t={self.page_token(order_id)}"
