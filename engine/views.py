"""The API's Order object, built from an admitted request and what is known of its outcome.

Both the front door (answers, GET, buyer pages) and the worker (webhooks) show orders, so the
view lives here, below both; what it needs of the rooms above is named by the protocols below.
"""

from __future__ import annotations

from typing import Protocol

from engine.clock import rfc3339
from engine.wire import (
    Order,
    OrderRecord,
    Price,
    QueueInfo,
    Status,
    StreamOrder,
    as_ticket_reason,
)


class CodeOpener(Protocol):
    """Opens codes as stored (sealed or not) for the buyer: engine.store.sealing.Sealer."""

    def reveal(self, sku: str, stored: list[str]) -> list[str] | None: ...


class Shop(Protocol):
    """What a view needs of the running config: engine.config.directory.Directory."""

    @property
    def sealer(self) -> CodeOpener: ...

    def page_url(self, order_id: str) -> str: ...

    @property
    def currency(self) -> str: ...


class LineSpeeds(Protocol):
    """How fast the waiting lines move: engine.worker.drain.DrainRates."""

    def eta_s(self, reason: str, sku: str, position: int | None) -> float | None: ...


class PauseInForce(Protocol):
    """The pause an order waits behind (engine.controls.pauses.InForce), or the maintenance
    window (engine.controls.maintenance.Waiting)."""

    def ends_ms(self) -> int | None: ...

    def notice(self) -> str: ...


def order_view(
    directory: Shop,
    request: StreamOrder,
    *,
    status: Status,
    created_ms: int,
    updated_ms: int,
    codes: list[str] | None = None,
    reason: str = "",
    position: int | None = None,
    expires_ms: int = 0,
    drain: LineSpeeds | None = None,
    pause: PauseInForce | None = None,
    now_ms: int = 0,
) -> Order:
    order = Order(
        order_id=request.order_id,
        status=status,
        sku=request.sku,
        qty=request.qty,
        buyer=request.buyer,
        tier=request.tier,
        created_at=rfc3339(created_ms),
        updated_at=rfc3339(updated_ms or created_ms),
        metadata=request.metadata,
    )
    if request.priced:
        order.price = Price(currency=directory.currency, amount=request.amount,
                            discount=request.discount, points=request.points,
                            points_value=request.amount - request.discount - request.cash_due,
                            cash_due=request.cash_due)
    if status == "fulfilled":
        order.codes = directory.sealer.reveal(request.sku, codes or [])
        if order.codes is None:
            order.notice = ("the codes cannot be shown now: they are sealed with a key that is "
                            "not configured; the operator restores it, then they show here")
    elif status == "held":
        order.hold_expires_at = rfc3339(expires_ms) if expires_ms else None
    elif status == "queued":
        why = as_ticket_reason(reason)
        eta = drain.eta_s(why, request.sku, position) if drain is not None else None
        if why in ("paused", "maintenance"):
            # served when the pause or the window ends (then by the line's rate: not known)
            ends = pause.ends_ms() if pause is not None else None
            eta = None if ends is None else round(max(0, ends - now_ms) / 1000, 1)
            order.notice = pause.notice() if pause is not None else None
        elif why == "review":
            eta = None  # an operator decides
        order.queue = QueueInfo(
            reason=why,
            position=position or None,
            eta_s=eta,
            expires_at=rfc3339(expires_ms) if expires_ms else None,
            page=directory.page_url(request.order_id),
        )
    elif status in ("rejected", "expired", "cancelled"):
        order.reason = reason or status
    return order


def record_view(directory: Shop, record: OrderRecord, position: int | None,
                drain: LineSpeeds | None = None, pause: PauseInForce | None = None,
                now_ms: int = 0) -> Order:
    expires = record.hold_expires_ms if record.status == "held" else record.queue_expires_ms
    return order_view(
        directory,
        record.request,
        status=record.status,
        created_ms=record.created_ms,
        updated_ms=record.updated_ms,
        codes=record.codes,
        reason=record.reason,
        position=position,
        expires_ms=expires,
        drain=drain,
        pause=pause,
        now_ms=now_ms,
    )
