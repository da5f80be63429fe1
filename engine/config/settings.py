"""Settings: the TOML config file as msgspec structs (checked by engine.config.check)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from engine.wire import ID_PATTERN, SKU_PATTERN, Reason

HEX64 = r"^[0-9a-f]{64}$(?!\n)"
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOST_PATTERN = rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$(?!\n)"  # a lowercase host name

Ident = Annotated[str, Meta(pattern=ID_PATTERN)]
SkuId = Annotated[str, Meta(pattern=SKU_PATTERN)]
Seconds = Annotated[float, Meta(ge=0, le=10 * 365 * 86400)]  # finite: never inf
Port = Annotated[int, Meta(ge=0, le=65535)]
Tier = Annotated[int, Meta(ge=0, le=9)]


class Base(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Every config section: unknown keys are errors, values are immutable once loaded."""


class Rate(Base, frozen=True):
    rate: Annotated[float, Meta(gt=0, le=1e9)]
    burst: Annotated[int, Meta(ge=1)]


class Server(Base, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024
    max_import_bytes: Annotated[int, Meta(ge=1024)] = 256 * 1024 * 1024
    body_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0  # a stalled upload: 408
    page_secret: str = ""  # signs buyer-page links; "env:NAME" reads a variable
    page_link_ttl_s: Annotated[int, Meta(ge=60)] = 7 * 86400  # a buyer-page link expires
    metrics_token: str = ""  # when set, GET /metrics needs `Authorization: Bearer <it>`
    backlog: Annotated[int, Meta(ge=16, le=65535)] = 4096  # connections waiting for accept
    # the order routes answered without aiohttp's Request and Response (engine.http.lean)
    lean_routes: bool = True


class Redis(Base, frozen=True):
    url: str = "embedded"
    cluster: bool = False  # url names any node of a running Redis Cluster
    shards: Annotated[int, Meta(ge=1, le=1024)] = 4
    data_dir: str = ".kamigate"
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    # an answer (admission, codes, webhook) waits until this many replicas hold what it
    # shows (Redis WAIT, at most wait_timeout_ms, else 503): 0 = asynchronous replication
    wait_replicas: Annotated[int, Meta(ge=0, le=16)] = 0
    wait_timeout_ms: Annotated[int, Meta(ge=1, le=60000)] = 100


class Orders(Base, frozen=True):
    default_wait_ms: Annotated[int, Meta(ge=0, le=10000)] = 2000
    max_hold_s: Annotated[int, Meta(ge=0)] = 900
    # a decided order is archived and removed this long after it was decided (at least a
    # day: the Idempotency-Key window)
    retention_s: Annotated[int, Meta(ge=86400, le=10 * 366 * 86400)] = 30 * 86400


class Worker(Base, frozen=True):
    batch_size: Annotated[int, Meta(ge=1, le=10000)] = 512
    block_ms: Annotated[int, Meta(ge=1, le=60000)] = 200
    lease_s: Annotated[float, Meta(ge=0.5, le=300)] = 3.0
    reclaim_idle_ms: Annotated[int, Meta(ge=100)] = 10000
    line_scan: Annotated[int, Meta(ge=1, le=100000)] = 1000


class Webhooks(Base, frozen=True):
    timeout_s: Annotated[float, Meta(gt=0, le=60)] = 5.0
    first_retry_s: Annotated[float, Meta(gt=0, le=1e9)] = 1.0
    max_retry_s: Annotated[float, Meta(gt=0, le=1e9)] = 3600.0
    give_up_after_s: Annotated[float, Meta(gt=0, le=1e9)] = 86400.0 * 2
    concurrency: Annotated[int, Meta(ge=1, le=1000)] = 32
    per_storefront: Annotated[int, Meta(ge=1, le=1000)] = 8  # in flight to one storefront
    allow_private: bool = False  # deliver to loopback, link-local and private addresses


class Limits(Base, frozen=True):
    global_: Rate | None = msgspec.field(default=None, name="global")
    per_storefront: Rate | None = None
    per_buyer: Rate | None = None
    per_ip: Rate | None = None


class WaitingRoom(Base, frozen=True):
    enabled: bool = True
    capacity: Annotated[int, Meta(ge=0)] = 100000
    # order.delayed: a ticket still waiting this long past the ETA it was given (0 = never)
    delay_notice_s: Annotated[int, Meta(ge=0, le=86400)] = 60
    # ... or, when set (> 1), not before it has waited delay_factor x that first ETA
    delay_factor: Annotated[float, Meta(ge=0, le=1000)] = 0.0


class Backpressure(Base, frozen=True):
    """When the workers fall behind, admission follows what they drain, then recovers."""

    max_lag: Annotated[int, Meta(ge=0)] = 50_000  # stream entries not yet claimed; 0 = off
    max_delay_ms: Annotated[float, Meta(ge=0, le=1e9)] = 1000.0  # admission to claim; 0 = off
    min_rate: Annotated[float, Meta(gt=0, le=1e9)] = 10.0  # never throttle below this (orders/s)


class Storefront(Base, frozen=True):
    id: Ident
    key_sha256: Annotated[str, Meta(pattern=HEX64)]
    webhook_secret: str = ""
    signing_secret: str = ""  # HMAC request signing (see engine/http/signing.py); "env:NAME"
    require_signature: bool = False  # refuse a bearer key alone
    notify_hosts: tuple[Annotated[str, Meta(pattern=HOST_PATTERN)], ...] = ()  # () = any
    events_url: str = ""  # account events (points, compensation, delays); "" = none


class Admin(Base, frozen=True):
    id: Ident
    role: Literal["viewer", "operator", "admin"]
    key_sha256: Annotated[str, Meta(pattern=HEX64)]


class Sku(Base, frozen=True):
    id: SkuId
    max_qty: Annotated[int, Meta(ge=1, le=1000)] = 10
    buyer_limit: Annotated[int, Meta(ge=0)] = 0
    on_sold_out: Literal["queue", "reject"] = "queue"
    queue_ttl_s: Annotated[int, Meta(ge=1)] = 1800
    review_over_qty: Annotated[int, Meta(ge=0)] = 0
    limit: Rate | None = None
    price: Annotated[int, Meta(ge=0, le=10**12)] | None = None  # minor units; None: unpriced
    low_stock: Annotated[int, Meta(ge=0)] = 0  # stock.low below this (0 = never)


class Pricing(Base, frozen=True):
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$(?!\n)")] = "CNY"  # 100 minor units
    payment_hold_s: Annotated[int, Meta(ge=1, le=86400)] = 900  # cash due: held this long


class EarnBonus(Base, frozen=True):
    over: Annotated[int, Meta(ge=0)]  # cash paid above this (minor units) ...
    percent: Annotated[int, Meta(ge=0, le=1000)]  # ... earns this much more


class Points(Base, frozen=True):
    enabled: bool = True  # a [points] section turns points on
    per_unit: Annotated[int, Meta(ge=1, le=10**6)] = 100  # points worth one currency unit
    earn_per_unit: Annotated[float, Meta(ge=0, le=10**6)] = 1.0  # per unit paid in cash
    earn_bonus: tuple[EarnBonus, ...] = ()
    tier_multipliers: tuple[Annotated[float, Meta(ge=0, le=100)], ...] = (1.0,)
    expire_after_days: Annotated[int, Meta(ge=0, le=36500)] = 730  # 0 = never
    max_redeem_percent: Annotated[int, Meta(ge=0, le=100)] = 100
    grants_per_minute: Annotated[int, Meta(ge=0)] = 10000  # per buyer; 0 = no limit
    redemptions_per_hour: Annotated[int, Meta(ge=0)] = 0  # per buyer; 0 = no limit
    remind_before_days: Annotated[int, Meta(ge=0, le=3650)] = 30


class CouponTemplate(Base, frozen=True):
    """A kind of coupon a storefront may issue to its buyers (snapshotted into each coupon)."""

    id: Ident
    kind: Literal["amount", "percent", "threshold"]  # threshold: amount off at min_spend
    amount: Annotated[int, Meta(ge=0, le=10**12)] = 0  # minor units off (amount, threshold)
    percent: Annotated[int, Meta(ge=0, le=100)] = 0  # percent off (percent)
    max_discount: Annotated[int, Meta(ge=0, le=10**12)] = 0  # cap of a percent coupon; 0 = none
    min_spend: Annotated[int, Meta(ge=0, le=10**12)] = 0  # the order's amount at least
    skus: tuple[SkuId, ...] = ()  # () = every priced SKU
    category: Ident = "discount"  # at most one coupon per category in an order
    stackable: bool = True  # False: it stands alone in an order
    valid_days: Annotated[int, Meta(ge=0, le=3650)] = 30  # from issue; 0 = valid_until only
    valid_from: str | None = None  # RFC 3339
    valid_until: str | None = None  # RFC 3339
    per_buyer: Annotated[int, Meta(ge=0, le=10**6)] = 1  # ever issued to one buyer; 0 = any
    total: Annotated[int, Meta(ge=0, le=10**9)] = 0  # ever issued; 0 = unlimited
    recycle_points: Annotated[int, Meta(ge=0, le=10**9)] = 0  # to the wallet when it expires
    remind_before_days: Annotated[int, Meta(ge=0, le=3650)] = 3  # coupon.expiring


class Coupons(Base, frozen=True):
    max_per_order: Annotated[int, Meta(ge=1, le=20)] = 3
    redemptions_per_ip_per_hour: Annotated[int, Meta(ge=0)] = 0  # 0 = no limit


class Compensation(Base, frozen=True):
    delay_over_s: Annotated[int, Meta(ge=0, le=30 * 86400)] = 0  # 0 = never automatically
    points: Annotated[int, Meta(ge=0, le=10**9)] = 0
    coupon_template: str = ""


class Calendar(Base, frozen=True):
    country: Annotated[str, Meta(min_length=2, max_length=3)]
    timezone: str = "UTC"
    subdiv: str | None = None


class Pause(Base, frozen=True):
    scope: str
    reason: Reason = ""
    calendar: str | None = None
    starts_at: str | None = None
    ends_at: str | None = None
    action: Literal["queue", "reject"] = "queue"  # what orders for the scope get meanwhile
    exempt_tiers: tuple[Tier, ...] = ()  # orders of these tiers are served all the same
    notice_lead_s: Seconds = 86400.0  # announced (answers, pages, pause.scheduled) this early


class Blocklist(Base, frozen=True):
    """Buyers and addresses answered 403 `blocked`."""

    buyers: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()  # addresses or CIDR ranges


class Review(Base, frozen=True):
    """Orders from these buyers or addresses wait for an operator (reason `review`)."""

    buyers: tuple[str, ...] = ()
    buyer_patterns: tuple[str, ...] = ()  # regular expressions, matched from the start
    ips: tuple[str, ...] = ()  # addresses or CIDR ranges


class Surge(Base, frozen=True):
    """爆单 alerts: incoming orders against the recent baseline or the drain capacity."""

    enabled: bool = True
    factor: Annotated[float, Meta(gt=1, le=1e9)] = 10.0
    capacity_factor: Annotated[float, Meta(ge=0, le=1e9)] = 0.0  # 0 = off
    clear_factor: Annotated[float, Meta(gt=0, le=1e9)] = 2.0
    min_rate: Annotated[float, Meta(ge=0, le=1e9)] = 50.0
    baseline_s: Annotated[float, Meta(gt=0, le=1e9)] = 300.0
    hold_s: Annotated[float, Meta(ge=0, le=1e9)] = 3.0
    per_sku: bool = True  # also watch each SKU's orders (a hot SKU raises its own alert)
    webhook_url: str = ""  # operators' alert receiver; "" = log and metric only


class Breaker(Base, frozen=True):
    """The front door's circuit breaker around Redis."""

    enabled: bool = True
    failures: Annotated[int, Meta(ge=1)] = 5
    slow_ms: Annotated[float, Meta(ge=0, le=1e9)] = 0.0  # 0 = off
    open_s: Annotated[float, Meta(gt=0, le=1e9)] = 2.0
    probes: Annotated[int, Meta(ge=1)] = 1
    timeout_s: Annotated[float, Meta(gt=0, le=60)] = 2.0  # a Redis call slower fails


class Codes(Base, frozen=True):
    """Codes sealed at rest (AES-256-GCM); no keys: codes are stored as imported."""

    keys: dict[str, str] = {}  # key id -> 32 bytes in base64; "env:NAME" reads a variable
    current: str = ""  # the key that seals new imports and `kamigate keys rotate`
    fingerprint_key: str = ""  # keys import's duplicate check; set once, never changed


class Audit(Base, frozen=True):
    # a floor: an admin cannot make the trail forget quickly what was done
    retention_s: Annotated[int, Meta(ge=7 * 86400)] = 30 * 86400


class Maintenance(Base, frozen=True):
    mode: Literal["off", "read_only", "full"] = "off"
    action: Literal["reject", "queue"] = "reject"  # queue: new orders wait as tickets
    notice_lead_s: Seconds = 86400.0
    reason: Reason = ""
    starts_at: str | None = None
    eta: str | None = None


class Supplier(Base, frozen=True):
    """A supplier that restocks its SKUs by itself: asked for `batch` codes (a signed POST)
    when a SKU's available falls below `low_water` or its sold-out line is not empty."""

    id: Ident
    url: str
    skus: tuple[SkuId, ...]
    secret: str  # signs each request like a webhook; "env:NAME" reads a variable
    low_water: Annotated[int, Meta(ge=0)] = 0
    batch: Annotated[int, Meta(ge=1, le=100_000)] = 100
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 10.0
    max_backoff_s: Annotated[float, Meta(ge=1, le=86400)] = 300.0  # after failures in a row


class Settings(Base, frozen=True):
    server: Server = Server()
    redis: Redis = Redis()
    orders: Orders = Orders()
    worker: Worker = Worker()
    webhooks: Webhooks = Webhooks()
    limits: Limits = Limits()
    waiting_room: WaitingRoom = WaitingRoom()
    backpressure: Backpressure = Backpressure()
    storefronts: tuple[Storefront, ...] = ()
    admins: tuple[Admin, ...] = ()
    skus: tuple[Sku, ...] = ()
    calendars: dict[str, Calendar] = {}
    pauses: tuple[Pause, ...] = ()
    suppliers: tuple[Supplier, ...] = ()
    maintenance: Maintenance = Maintenance()
    blocklist: Blocklist = Blocklist()
    review: Review = Review()
    surge: Surge = Surge()
    breaker: Breaker = Breaker()
    audit: Audit = Audit()
    codes: Codes = Codes()
    pricing: Pricing = Pricing()
    points: Points = Points(enabled=False)  # no [points] section: no points
    compensation: Compensation = Compensation()
    coupons: Coupons = Coupons()
    coupon_templates: tuple[CouponTemplate, ...] = ()

    def digest(self) -> str:
        """Identifies these exact settings, secrets included: how the fleet tells a new config
        from the running one. Never shown (see redaction.public_sha256)."""
        return hashlib.sha256(msgspec.json.encode(self, order="sorted")).hexdigest()


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
