"""Every wire type: API bodies, stream entries, replies; with codecs built once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Generic, Literal, TypeVar, get_args

import msgspec
from msgspec import Meta

# `$(?!\n)`: Python's `$` also matches before a final newline; the lookahead refuses that
# and still reads the same in the JSON Schema (ECMA) dialect of the OpenAPI document.
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$(?!\n)"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$(?!\n)"
LOT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$(?!\n)"  # a lot id an import may name
# an existing lot: an import's CSV rows with an expiry of their own form `<lot>~<expiry>`
EXISTING_LOT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}(~[0-9]{1,12})?$(?!\n)"

Sku = Annotated[str, Meta(pattern=SKU_PATTERN)]
Buyer = Annotated[str, Meta(min_length=1, max_length=128)]
IdempotencyKey = Annotated[str, Meta(pattern=r"^[\x21-\x7e]{1,128}$(?!\n)")]
NotifyUrl = Annotated[str, Meta(pattern=r"^https?://[^\s]+$(?!\n)", max_length=2048)]
COUPON_PATTERN = r"^CP[0-9A-F]{4}[A-Z2-7]{24}$(?!\n)"
CouponCode = Annotated[str, Meta(pattern=COUPON_PATTERN)]
Metadata = dict[Annotated[str, Meta(max_length=256)], Annotated[str, Meta(max_length=2048)]]

Status = Literal["pending", "queued", "fulfilled", "held", "rejected", "expired", "cancelled"]
STATUSES: tuple[Status, ...] = get_args(Status)
# Why a ticket waits: stock ran out, a capacity bucket was empty, its scope is paused, or an
# operator has to review it.
TicketReason = Literal["sold_out", "overflow", "paused", "review", "maintenance"]
TICKET_REASONS: tuple[TicketReason, ...] = get_args(TicketReason)
# What admitting an order answers: a status, or "full" (no room in its line; nothing written).
AdmitStatus = Status | Literal["full", "abandoned"]
_STATUS_OF: dict[str, Status] = {s: s for s in STATUSES}
_TICKET_REASON_OF: dict[str, TicketReason] = {r: r for r in TICKET_REASONS}


def as_status(text: str) -> Status:
    """A status as Redis keeps it, checked; ValueError for anything else."""
    try:
        return _STATUS_OF[text]
    except KeyError:
        raise ValueError(f"not an order status: {text!r}") from None


def as_ticket_reason(text: str) -> TicketReason:
    """A waiting order's reason as its record keeps it; none recorded means sold out."""
    return _TICKET_REASON_OF.get(text, "sold_out")
MAX_METADATA_BYTES = 2048
# A maintenance or pause reason travels in the Kamigate-Notice header of every answer: short.
MAX_REASON = 200
Reason = Annotated[str, Meta(max_length=MAX_REASON)]
MAX_POINTS = 10**12
T = TypeVar("T")


class _Wire(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of client-facing bodies: unknown fields are errors."""


class OrderRequest(_Wire):
    sku: Sku
    qty: Annotated[int, Meta(ge=1, le=1000)]
    buyer: Buyer
    buyer_ip: Annotated[str, Meta(max_length=64)] | None = None
    tier: Annotated[int, Meta(ge=0, le=9)] = 0
    hold_s: Annotated[int, Meta(ge=0, le=86400)] = 0
    wait_ms: Annotated[int, Meta(ge=0, le=10000)] | None = None
    notify_url: NotifyUrl | None = None
    metadata: Metadata | None = None
    points: Annotated[int, Meta(ge=0, le=MAX_POINTS)] = 0  # to pay with (a priced SKU)
    coupons: Annotated[list[CouponCode], Meta(max_length=20)] | None = None  # in order


class BatchItem(OrderRequest, kw_only=True):
    idempotency_key: IdempotencyKey | None = None


class BatchRequest(_Wire):
    orders: Annotated[list[BatchItem], Meta(min_length=1, max_length=1000)]


class PauseRequest(_Wire):
    """POST /admin/pause."""

    scope: str
    reason: Reason = ""
    until: str | None = None
    action: Literal["queue", "reject"] = "queue"
    exempt_tiers: tuple[Annotated[int, Meta(ge=0, le=9)], ...] = ()


class ResumeRequest(_Wire):
    """POST /admin/resume."""

    scope: str


class ReviewDecision(_Wire):
    """POST /admin/review/{order_id}."""

    decision: Literal["approve", "reject"]


class PageText(msgspec.Struct, kw_only=True):
    """What the buyer's page shows, already worded in its language; null rows are hidden."""

    headline: str
    detail: str
    position: str | None
    eta: str | None
    expires: str | None


class PageState(msgspec.Struct, kw_only=True):
    """GET /q/{order_id}/state: the order as its buyer may see it (never its codes)."""

    status: Status
    position: int | None
    eta_s: float | None
    expires_at: str | None
    notice: str | None
    reason: str | None
    text: PageText


class QueueInfo(msgspec.Struct, kw_only=True):
    reason: TicketReason
    position: int | None
    eta_s: float | None
    expires_at: str | None
    page: str


class Price(msgspec.Struct, kw_only=True):
    """What a priced order costs, in minor units: amount = price x qty; cash_due = amount -
    discount - points_value (never negative)."""

    currency: str
    amount: int
    discount: int
    points: int
    points_value: int
    cash_due: int


class Order(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The Order object of the API."""

    order_id: str
    status: Status
    sku: str
    qty: int
    buyer: str
    tier: int
    created_at: str
    updated_at: str
    codes: list[str] | None = None
    hold_expires_at: str | None = None
    queue: QueueInfo | None = None
    reason: str | None = None
    notice: str | None = None
    metadata: dict[str, str] | None = None
    price: Price | None = None


class StreamOrder(msgspec.Struct, array_like=True, frozen=True):
    """An admitted order as the stream carries it and the order record keeps it.

    array_like: both ends are ours; new fields are only ever appended, with defaults.
    """

    order_id: str
    storefront: str
    sku: str
    qty: int
    buyer: str
    tier: int
    created_ms: int
    reply_to: str = ""
    buyer_ip: str = ""
    hold_s: int = 0
    notify_url: str = ""
    metadata: dict[str, str] | None = None
    amount: int = 0  # priced orders: price x qty, minor units (0: unpriced)
    points: int = 0  # reserved in the buyer's wallet at admission
    cash_due: int = 0  # > 0: held until the storefront confirms payment
    earn: int = 0  # points granted on fulfilment
    priced: bool = False  # the SKU has a price: the Order shows it
    coupons: tuple[str, ...] = ()  # the ids of the coupons reserved for it, in order
    discount: int = 0  # what they take off, minor units

    @property
    def settles_points(self) -> bool:
        """Its decision moves points or coupons (spend or give back what it reserved, grant
        what it earns): the deciding script tells the worker through the settle stream."""
        return self.points > 0 or self.earn > 0 or bool(self.coupons)


class OrderRecord(msgspec.Struct):
    """An order's record in Redis, read back (engine/store/records.py names its fields)."""

    request: StreamOrder
    status: Status
    arrival: int
    created_ms: int
    updated_ms: int
    codes: list[str]
    reason: str
    queue_expires_ms: int
    hold_expires_ms: int
    admitted_ms: int = 0  # when it entered the stream (after the overflow line, if any)


class Reply(msgspec.Struct, array_like=True):
    """The outcome a worker publishes to the front door that admitted the order (claim.lua
    and others build it as an array: their headers name its fields in this order)."""

    order_id: str
    status: AdmitStatus  # "full", "abandoned" only in the door: an admission refused
    updated_ms: int
    codes: list[str] = []
    reason: str = ""
    position: int = 0
    expires_ms: int = 0


json_encode = msgspec.json.Encoder().encode
msgpack_encode = msgspec.msgpack.Encoder().encode
decode_stream_order = msgspec.msgpack.Decoder(StreamOrder).decode
decode_reply = msgspec.msgpack.Decoder(Reply).decode
decode_replies = msgspec.msgpack.Decoder(list[Reply]).decode


class BodyDecoder(Generic[T]):
    """A request body's type and its JSON and msgpack decoders, built once."""

    __slots__ = ("json", "msgpack", "type")

    def __init__(self, body_type: type[T]) -> None:
        self.type = body_type
        self.json: Callable[[bytes], T] = msgspec.json.Decoder(body_type).decode
        self.msgpack: Callable[[bytes], T] = msgspec.msgpack.Decoder(body_type).decode


ORDER_REQUEST = BodyDecoder(OrderRequest)
BATCH_REQUEST = BodyDecoder(BatchRequest)
PAUSE_REQUEST = BodyDecoder(PauseRequest)
RESUME_REQUEST = BodyDecoder(ResumeRequest)
REVIEW_DECISION = BodyDecoder(ReviewDecision)
