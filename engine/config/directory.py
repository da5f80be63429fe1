"""Lookups the front door does on every request, built once per config: keys, SKUs, shards."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from typing import Any

import re2

from engine.config.settings import Admin, Settings, Sku, Storefront
from engine.store import keys
from engine.store.sealing import sealer_of

ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}
_STAMP = re.compile(r"[0-9a-f]{1,12}")  # a page token's expiry, lowercase hex unix seconds


class Directory:
    """Indexes over one Settings value; replaced whole when the config changes."""

    def __init__(self, settings: Settings, fallback_secret: str = "") -> None:
        """fallback_secret: signs buyer-page links when the config sets no page_secret (the
        fleet's random secret in Redis, so links survive config changes)."""
        self.settings = settings
        self.storefronts: dict[str, Storefront] = {s.key_sha256: s for s in settings.storefronts}
        self.storefront_by_id: dict[str, Storefront] = {s.id: s for s in settings.storefronts}
        self.admins: dict[str, Admin] = {a.key_sha256: a for a in settings.admins}
        # bearer -> its principal, filled by the keys that matched: a storefront sends the
        # same key with every order, and a config change builds a new Directory (no stale
        # key survives it); keys that match nothing are never kept
        self._known: dict[str, Storefront | Admin] = {}
        self.skus: dict[str, Sku] = {s.id: s for s in settings.skus}
        shards = settings.redis.shards
        self.shard_by_sku: dict[str, int] = {
            s.id: keys.shard_of_sku(s.id, shards) for s in settings.skus
        }
        secret = settings.server.page_secret or fallback_secret or "".join(
            ["kamigate-page", *sorted(self.storefronts), *sorted(self.admins)]
        )
        self.page_key = hashlib.sha256(secret.encode()).digest()
        codes = settings.codes
        self.currency = settings.pricing.currency
        self.sealer = sealer_of(codes.keys, codes.current, codes.fingerprint_key)
        self.blocked = AddressRules(settings.blocklist.buyers, settings.blocklist.ips)
        review = settings.review
        self.reviewed = AddressRules(review.buyers, review.ips, review.buyer_patterns)

    def review_reason(self, sku: Sku, qty: int, buyer: str, ip: str | None) -> str | None:
        """Why this order waits for an operator, or None."""
        if sku.review_over_qty and qty > sku.review_over_qty:
            return f"qty over {sku.review_over_qty}"
        if self.reviewed.match(buyer, ip):
            return "review rule"
        return None

    def principal(self, bearer: str) -> Storefront | Admin | None:
        known = self._known.get(bearer)
        if known is not None:
            return known
        digest = hashlib.sha256(bearer.encode()).hexdigest()
        found: Storefront | Admin | None = self.storefronts.get(digest) or self.admins.get(digest)
        if found is not None and hmac.compare_digest(found.key_sha256, digest):
            if len(self._known) < 4 * (len(self.storefronts) + len(self.admins)):
                self._known[bearer] = found
            return found
        return None

    def page_token(self, order_id: str, now_s: float | None = None) -> str:
        """`<expiry, unix s, hex>.<mac>`: a link valid for server.page_link_ttl_s."""
        expires = int(time.time() if now_s is None else now_s) + \
            self.settings.server.page_link_ttl_s
        return f"{expires:x}.{self._page_mac(order_id, expires)}"

    def page_token_valid(self, order_id: str, token: str, now_s: float | None = None) -> bool:
        """Signed for this order and not expired (constant-time compare)."""
        stamp, _, mac = token.partition(".")
        if not _STAMP.fullmatch(stamp):  # exactly what page_token writes: no 0x, sign, _ or space
            return False
        expires = int(stamp, 16)
        if expires < (time.time() if now_s is None else now_s):
            return False
        return hmac.compare_digest(mac.encode(), self._page_mac(order_id, expires).encode())

    def _page_mac(self, order_id: str, expires: int) -> str:
        message = f"{order_id}.{expires}".encode()
        return hmac.new(self.page_key, message, hashlib.sha256).hexdigest()[:32]

    def page_path(self, order_id: str) -> str:
        return f"/q/{order_id}?t={self.page_token(order_id)}"

    def page_url(self, order_id: str) -> str:
        """The buyer's page as a link a storefront can hand on: under server.public_url."""
        return self.settings.server.public_url.rstrip("/") + self.page_path(order_id)


def buyer_pattern(text: str) -> Any:
    """A review pattern, compiled for RE2: matching takes time linear in the buyer id whatever
    the pattern (Python's `re` can take seconds on `([a-z0-9]+\\.?)+@x` and a 128-character id).
    ValueError names what RE2 refuses (backreferences, lookarounds)."""
    options = re2.Options()
    options.log_errors = False  # the config check reports it, by key
    try:
        return re2.compile(text, options)
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and \
            isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(why) from None


class AddressRules:
    """Buyers (exact or by pattern) and addresses (exact or CIDR ranges) to match an order
    against; exact ones are set lookups, so a long list costs nothing per request."""

    def __init__(self, buyers: tuple[str, ...], ips: tuple[str, ...],
                 patterns: tuple[str, ...] = ()) -> None:
        self.buyers = frozenset(buyers)
        self.patterns = [buyer_pattern(p) for p in patterns]
        networks = [ipaddress.ip_network(v, strict=False) for v in ips]
        self.addresses = frozenset(str(n.network_address) for n in networks
                                   if n.num_addresses == 1)
        self.ranges = [n for n in networks if n.num_addresses > 1]
        self.empty = not (buyers or ips or patterns)

    def match(self, buyer: str, ip: str | None) -> bool:
        if self.empty:
            return False
        if buyer in self.buyers or any(p.match(buyer) for p in self.patterns):
            return True
        if not ip:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return str(address) in self.addresses or any(address in n for n in self.ranges)
