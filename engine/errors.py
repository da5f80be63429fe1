"""One exception per problem code of the API, rendered as RFC 9457 problem+json."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

PROBLEM_JSON = "application/problem+json"


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(Exception):
    """A problem answer; subclasses fix the code, status and title."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str = "",
        *,
        errors: list[FieldError] | None = None,
        order_id: str | None = None,
        notice: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors
        self.order_id = order_id
        self.notice = notice
        self.retry_after = retry_after
        self.extra_headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": f"/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.errors is not None:
            doc["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        if self.order_id is not None:
            doc["order_id"] = self.order_id
        if self.notice is not None:
            doc["notice"] = self.notice
        return doc

    def headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


def _problem(code: str, status: int, title: str) -> type[Problem]:
    return type(
        "".join(p.title() for p in code.split("_")),
        (Problem,),
        {"code": code, "status": status, "title": title, "__module__": __name__},
    )


InvalidRequest = _problem("invalid_request", 422, "The request is not valid")
Unauthenticated = _problem("unauthenticated", 401, "A valid bearer key is required")
Forbidden = _problem("forbidden", 403, "This key may not use this route")
Blocked = _problem("blocked", 403, "The buyer is blocked")
NotFound = _problem("not_found", 404, "No such resource")
UnknownSku = _problem("unknown_sku", 404, "No such SKU")
MethodNotAllowed = _problem("method_not_allowed", 405, "Method not allowed")
SoldOut = _problem("sold_out", 409, "Sold out")
LimitExceeded = _problem("limit_exceeded", 409, "Over the buyer's purchase limit")
IdempotencyConflict = _problem(
    "idempotency_conflict", 409, "Idempotency-Key reused with a different body"
)
NotHeld = _problem("not_held", 409, "The order is not held")
LotVoided = _problem("lot_voided", 409, "The lot was voided")
NotInReview = _problem("not_in_review", 409, "The order is not waiting for review")
NotCancellable = _problem("not_cancellable", 409, "The order can no longer be cancelled")
InsufficientPoints = _problem("insufficient_points", 409, "Not enough points")
OrderAbandoned = _problem(
    "order_abandoned", 409, "The order was abandoned before it was admitted"
)
Recalled = _problem(
    "recalled", 409, "The held codes were recalled and no others are left to replace them"
)
CouponLimit = _problem("coupon_limit", 409, "The coupon template's limit is reached")
CouponNotActive = _problem("coupon_not_active", 409, "The coupon is not active")
CouponInvalid = _problem("coupon_invalid", 409, "A coupon may not be used in this order")
NotPriced = _problem("not_priced", 422, "The SKU has no price")
RequestTimeout = _problem("request_timeout", 408, "The request did not arrive in time")
PayloadTooLarge = _problem("payload_too_large", 413, "The body is too large")
UnsupportedMediaType = _problem("unsupported_media_type", 415, "Unsupported content type")
RateLimited = _problem("rate_limited", 429, "Too many requests")
Internal = _problem("internal", 500, "Internal error")
Unavailable = _problem("unavailable", 503, "The engine cannot reach its store")
Maintenance = _problem("maintenance", 503, "Closed for maintenance")
Paused = _problem("paused", 503, "Delivery is paused")

ALL: tuple[type[Problem], ...] = (
    InvalidRequest, Unauthenticated, Forbidden, Blocked, NotFound, UnknownSku, MethodNotAllowed,
    SoldOut, LimitExceeded, IdempotencyConflict, NotHeld, NotInReview, LotVoided,
    NotCancellable, InsufficientPoints, OrderAbandoned, Recalled, CouponLimit, CouponNotActive,
    CouponInvalid, NotPriced, RequestTimeout, PayloadTooLarge, UnsupportedMediaType,
    RateLimited, Internal, Unavailable, Maintenance, Paused,
)

BY_REASON: dict[str, type[Problem]] = {"sold_out": SoldOut, "limit_exceeded": LimitExceeded}


def invalid(field: str, message: str) -> Problem:
    return InvalidRequest(f"{field}: {message}", errors=[FieldError(field, message)])


_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.[]")


def split_validation(message: str) -> tuple[str, str]:
    """(message, path without `$.`) of a msgspec error, with string operations only (the
    message repeats the client's field names: a pattern searched over it can cost quadratic
    time). msgspec appends " - at `$<path>`", built from our own field names, indexes and
    `[...]`; a tail that is not such a path is part of the message."""
    at = message.rfind(" - at `$")
    if at < 0 or not message.endswith("`"):
        return message, ""
    path = message[at + len(" - at `$"):-1]
    if not path or not set(path) <= _PATH_CHARS:
        return message, ""
    return message[:at], path[1:] if path.startswith(".") else path
