"""Every Redis key name kamigate uses, and nothing else (a wallet's and its coupons':
engine/store/wallet_keys.py).

Keys that one Lua call touches share the hash tag of their shard, `{s<k>}`, so the engine runs
unchanged on Redis Cluster. A SKU lives on one shard; an order id carries its shard.
"""

from __future__ import annotations

import os
import secrets
import zlib

PREFIX = "kg"
GROUP = "workers"


def shard_of_sku(sku: str, shards: int) -> int:
    return zlib.crc32(sku.encode()) % shards


def tag(shard: int) -> str:
    return f"{PREFIX}:{{s{shard}}}"


_entropy = bytearray()
# A forked child must never hand out the ids its parent still holds.
os.register_at_fork(after_in_child=_entropy.clear)


def new_order_id(shard: int) -> str:
    """`o_` + the shard in hex (4 digits) + 16 random hex digits (from the OS's CSPRNG,
    drawn 8 KiB at a time: one system call per thousand orders, not one per order)."""
    if len(_entropy) < 8:
        _entropy[:] = secrets.token_bytes(8192)
    chunk = _entropy[-8:]
    del _entropy[-8:]
    return f"o_{shard:04x}{chunk.hex()}"


def shard_of_order(order_id: str) -> int | None:
    """The shard an order id names, or None when the id is not one of ours."""
    if len(order_id) != 22 or not order_id.startswith("o_"):
        return None
    try:
        int(order_id[6:], 16)
        return int(order_id[2:6], 16)
    except ValueError:
        return None


# -- per shard ----------------------------------------------------------------------------------
def stream(shard: int) -> str:
    """Order stream of a shard: new orders and "run the line" kicks."""
    return f"{tag(shard)}:orders"


def sequence(shard: int) -> str:
    """Arrival counter of a shard (orders' arrival order)."""
    return f"{tag(shard)}:seq"


def lease(shard: int) -> str:
    """Which worker owns the shard right now."""
    return f"{tag(shard)}:owner"


def order(order_id: str, shard: int) -> str:
    """Hash of one order: request, status, codes, timestamps."""
    return f"{tag(shard)}:o:{order_id}"


IDEMPOTENCY_TTL_S = 24 * 3600  # how long an Idempotency-Key (and an abandoned id) is kept


def idempotency(shard: int, storefront: str, key: str) -> str:
    return f"{tag(shard)}:idem:{storefront}:{key}"


def shard_of_idempotency(storefront: str, key: str, shards: int) -> int:
    return zlib.crc32(f"{storefront}\0{key}".encode()) % shards


# -- per SKU (all on the SKU's shard) -----------------------------------------------------------
def sku_counts(sku: str, shard: int) -> str:
    """Hash: ver, imported, available, held, issued, voided, expired."""
    return f"{tag(shard)}:sku:{sku}"


def lots(sku: str, shard: int) -> str:
    """Hash: lot id -> codes still available in it."""
    return f"{tag(shard)}:lots:{sku}"


def lot_expiry(sku: str, shard: int) -> str:
    """Hash: lot id -> expiry (unix seconds, 0 = never)."""
    return f"{tag(shard)}:lotexp:{sku}"


def lot_codes(sku: str, lot: str, shard: int) -> str:
    """List of the lot's codes not yet issued, oldest import first."""
    return f"{tag(shard)}:codes:{sku}:{lot}"


def seen(sku: str, shard: int) -> str:
    """Set of digests of every code ever imported for the SKU (dedupe)."""
    return f"{tag(shard)}:seen:{sku}"


def line(sku: str, shard: int) -> str:
    """Sorted set: the SKU's waiting line, score = (9 - tier) * 2**40 + arrival."""
    return f"{tag(shard)}:line:{sku}"


def fence(shard: int) -> str:
    """Counter written only to WAIT behind it (engine/store/replication.py)."""
    return f"{tag(shard)}:fence"


BOUGHT_BUCKETS = 256


def bought(sku: str, shard: int, buyer: str) -> str:
    """Hash: buyer -> codes already allotted to the buyer for this SKU. A SKU's buyers are
    spread over BOUGHT_BUCKETS hashes so that each stays small enough for Redis to keep it
    as a listpack (about 10 bytes a buyer, against about 90 in one large hash)."""
    return bought_bucket(sku, shard, zlib.crc32(buyer.encode()) % BOUGHT_BUCKETS)


def bought_bucket(sku: str, shard: int, bucket: int) -> str:
    return f"{tag(shard)}:bought:{sku}:{bucket:02x}"


def bought_unbucketed(sku: str, shard: int) -> str:
    """The one hash of a SKU's purchases written before the buckets: still read (its counts
    are added to the buckets'), never written."""
    return f"{tag(shard)}:bought:{sku}"


# -- global (no Lua call touches these together with shard keys) --------------------------------
def skus_known() -> str:
    """Set of SKUs that ever had stock (for listings and reconcile)."""
    return f"{PREFIX}:skus"


def reply_channel(process_id: str) -> str:
    return f"{PREFIX}:reply:{process_id}"


def workers() -> str:
    """Sorted set: worker id -> last heartbeat (unix ms). A set, not a key per worker, so
    counting the living never scans the keyspace."""
    return f"{PREFIX}:workers"


def orders_pattern(shard: int) -> str:
    return f"{tag(shard)}:o:*"


def stats(shard: int) -> str:
    """Hash of the shard's worker counters (outcomes, claim batch sizes), read by /metrics."""
    return f"{tag(shard)}:stats"


def overflow_line(sku: str, shard: int) -> str:
    """Sorted set: orders over a capacity bucket waiting to be admitted, same score as line()."""
    return f"{tag(shard)}:overflow:{sku}"


def overflowing(shard: int) -> str:
    """Set of the shard's SKUs whose overflow line is not empty (what the releaser visits)."""
    return f"{tag(shard)}:overflowing"


def expiries(shard: int) -> str:
    """Sorted set of the shard's queued and held orders by expiry (unix ms)."""
    return f"{tag(shard)}:expiries"


def bucket(name: str) -> str:
    """A fleet-wide token bucket held in Redis (hash: tokens, stamp)."""
    return f"{PREFIX}:bucket:{name}"


def front_doors() -> str:
    """Sorted set: front-door id -> last heartbeat (unix ms), for the fleet's share of rates."""
    return f"{PREFIX}:doors"


def outbox(shard: int) -> str:
    """Stream of order changes to send to storefronts' notify_url (the webhook outbox)."""
    return f"{tag(shard)}:outbox"


def webhook_retries(shard: int) -> str:
    """Sorted set: outbox entry id -> when to try it again (unix ms)."""
    return f"{tag(shard)}:webhook:retry"


def webhook_waiting(shard: int) -> str:
    """Hash: order id -> its undelivered outbox entry ids, in order (comma-joined)."""
    return f"{tag(shard)}:webhook:waiting"


def webhook_attempts(shard: int) -> str:
    """Hash: order id -> "<attempts>:<first failure, unix ms>" of its undelivered events."""
    return f"{tag(shard)}:webhook:attempts"


def webhook_dead(shard: int) -> str:
    """Stream of webhook events given up on (with the reason), for operators."""
    return f"{tag(shard)}:webhook:dead"


def maintenance() -> str:
    """The maintenance state an operator set (JSON); absent: the config's [maintenance]."""
    return f"{PREFIX}:maintenance"


def throttle() -> str:
    """The fleet's throttled admission rate while workers are behind (absent: no throttle)."""
    return f"{PREFIX}:throttle"


def drain(shard: int) -> str:
    """Hash: line (`overflow:<sku>` or `line:<sku>`) -> orders served per second, measured."""
    return f"{tag(shard)}:drain"


def config() -> str:
    """Hash: the fleet's running config (version, sha256, document JSON, origin, by, at,
    file_sha256 — the sha of the config file last applied from a file)."""
    return f"{PREFIX}:config"


def config_channel() -> str:
    """Pub/sub channel announcing a new config version (its number as the message)."""
    return f"{PREFIX}:config:changed"


def parked_line(sku: str, storefront: str, shard: int) -> str:
    """Sorted set: a storefront's tickets for a SKU waiting out a pause or a maintenance window
    that queues (score as a line)."""
    return f"{tag(shard)}:parked:{storefront}:{sku}"


def parking(shard: int) -> str:
    """Set of "<storefront>:<sku>" whose parked line is not empty."""
    return f"{tag(shard)}:parking"


def review_line(shard: int) -> str:
    """Sorted set: orders waiting for an operator's review, by arrival."""
    return f"{tag(shard)}:review"


def ticket_line(reason: str, sku: str, storefront: str, shard: int) -> str:
    """The line a queued order of this reason waits in."""
    if reason == "overflow":
        return overflow_line(sku, shard)
    if reason in ("paused", "maintenance"):
        return parked_line(sku, storefront, shard)
    if reason == "review":
        return review_line(shard)
    return line(sku, shard)


def pauses() -> str:
    """Hash: scope -> the operator's pause or resume of it (JSON), for every process."""
    return f"{PREFIX}:pauses"


def issued(shard: int) -> str:
    """Stream: the audit of code issuance, one entry per claim call ("e": one line per
    order: "order_id sku status lot:n,lot:n")."""
    return f"{tag(shard)}:issued"


def audit() -> str:
    """Stream: the audit of admin actions and config changes."""
    return f"{PREFIX}:audit"


def maintenance_scoped() -> str:
    """Hash: scope ("storefront:<id>", "sku:<id>") -> its maintenance state (JSON)."""
    return f"{PREFIX}:maintenance:scoped"


def fingerprint() -> str:
    """Hash: the import fingerprint codes were recorded under ('check': "plain", or the keyed
    digest of a fixed probe) and 'plain_before' (codes were once recorded unkeyed)."""
    return f"{PREFIX}:fingerprint"


def shard_fingerprint(shard: int) -> str:
    """Hash: the shard's copy of fingerprint(), checked by import.lua as it adds codes."""
    return f"{tag(shard)}:fingerprint"


def page_secret() -> str:
    """The fleet's random secret for buyer-page links when the config sets no page_secret."""
    return f"{PREFIX}:page_secret"


def dead_letter(shard: int) -> str:
    """Stream: order-stream entries given up on (undecodable, failing again and again)."""
    return f"{tag(shard)}:dead"


def nonce(storefront: str, value: str) -> str:
    """A signed request's nonce, kept while its timestamp is acceptable (no replay)."""
    return f"{PREFIX}:nonce:{storefront}:{value}"


def decided(shard: int) -> str:
    """Stream: one entry ('o': order id) per order that reached a final status, its id the
    moment it did: the retention's index (engine/worker/retention.py)."""
    return f"{tag(shard)}:decided"


def archive(shard: int) -> str:
    """Stream: decided orders past the retention, each entry the record's fields as kept
    plus 'o' (its id), until `kamigate export` writes and removes them."""
    return f"{tag(shard)}:archive"


def settle(shard: int) -> str:
    """Stream: orders with points decided on this shard, to post or void on their wallets."""
    return f"{tag(shard)}:settle"
