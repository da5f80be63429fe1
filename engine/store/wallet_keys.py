"""Redis key names of a wallet: a buyer's points and coupons at one storefront, all on the
wallet's shard (one Lua call may touch them together), and the shard's indexes of them."""

from __future__ import annotations

import zlib
from typing import NamedTuple

from engine.store.keys import PREFIX, tag


def shard_of_wallet(storefront: str, buyer: str, shards: int) -> int:
    return zlib.crc32(f"{storefront}\0{buyer}".encode()) % shards


class WalletKeys(NamedTuple):
    counts: str  # hash: balance, reserved, spent, granted, deducted, expired, lot_seq, l:<lot>
    expiries: str  # sorted set: lot -> when it expires (unix ms)
    reservations: str  # hash: order id -> "R|lot:n,..." reserved, "S|..." spent, "V|..." back
    history: str  # stream: the ledger, one entry per movement of points
    grant_keys: str  # hash: grant Idempotency-Key -> "entry id|digest|balance"; coupon keys
    coupons: str  # sorted set: the buyer's coupons (coupon ids) -> when issued (unix ms)


def wallet(storefront: str, buyer: str, shard: int) -> WalletKeys:
    return WalletKeys(*(f"{tag(shard)}:w{kind}:{storefront}:{buyer}"
                        for kind in ("", "e", "r", "h", "g", "c")))


def wallets(shard: int) -> str:
    """Set: every wallet of the shard ("<storefront>\\0<buyer>")."""
    return f"{tag(shard)}:wallets"


def wallet_next_expiry(shard: int) -> str:
    """Sorted set: wallet -> when its next lot expires (the expiry sweep's index)."""
    return f"{tag(shard)}:wnext"


def wallet_reminders(shard: int) -> str:
    """Sorted set: "<storefront>\\0<buyer>\\0<lot>" -> when to send its points.expiring."""
    return f"{tag(shard)}:wremind"


def open_reservations(shard: int) -> str:
    """Sorted set: "<storefront>\\0<buyer>\\0<order id>" -> when it was reserved (unix ms)."""
    return f"{tag(shard)}:wopen"


def coupon(coupon_id: str, shard: int) -> str:
    """Hash: one coupon (engine/wallet/coupons.py), named by the digest of its code."""
    return f"{tag(shard)}:cp:{coupon_id}"


def coupons_expiring(shard: int) -> str:
    """Sorted set: coupon id -> when it expires (the coupon sweep's index)."""
    return f"{tag(shard)}:cpexp"


def coupon_reminders(shard: int) -> str:
    """Sorted set: coupon id -> when to send its coupon.expiring."""
    return f"{tag(shard)}:cpremind"


def template_issued(template: str) -> str:
    """Counter: coupons of a limited template ever issued, across every shard (its own tag)."""
    return f"{PREFIX}:{{t:{template}}}:issued"
