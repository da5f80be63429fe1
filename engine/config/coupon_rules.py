"""What types alone cannot check in coupon templates and in [compensation]'s coupon: a kind's
own amounts, SKUs and templates that exist, validity windows that make sense."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.clock import parse_rfc3339
from engine.config.settings import CouponTemplate


def _moment(value: str | None, where: str, errors: list[str]) -> int | None:
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        errors.append(f"{where}: {exc}")
        return None


def _template(t: CouponTemplate, where: str, skus: set[str], points_on: bool,
              errors: list[str]) -> None:
    if t.kind in ("amount", "threshold") and t.amount <= 0:
        errors.append(f"{where}.amount: a {t.kind} coupon takes at least 1 (minor unit) off")
    if t.kind == "percent" and t.percent <= 0:
        errors.append(f"{where}.percent: a percent coupon takes 1 to 100 percent off")
    if t.kind == "threshold" and t.min_spend <= 0:
        errors.append(f"{where}.min_spend: a threshold coupon needs the amount it starts at")
    for i, sku in enumerate(t.skus):
        if sku not in skus:
            errors.append(f"{where}.skus[{i}]: {sku!r} is not a configured SKU")
    start = _moment(t.valid_from, f"{where}.valid_from", errors)
    end = _moment(t.valid_until, f"{where}.valid_until", errors)
    if start is not None and end is not None and end <= start:
        errors.append(f"{where}.valid_until: must be after valid_from")
    if t.valid_days == 0 and t.valid_until is None:
        errors.append(f"{where}.valid_days: 0 needs a valid_until (a coupon always ends)")
    if t.recycle_points and not points_on:
        errors.append(f"{where}.recycle_points: recycling into points needs [points]")


def coupon_templates(parts: Mapping[str, Any], errors: list[str]) -> None:
    templates = [t for t in parts.get("coupon_templates") or () if t is not None]
    skus = {s.id for s in parts.get("skus") or () if s is not None}
    points = parts.get("points")
    points_on = points is not None and points.enabled
    seen: set[str] = set()
    for i, template in enumerate(parts.get("coupon_templates") or ()):
        if template is None:
            continue
        if template.id in seen:
            errors.append(f"coupon_templates[{i}].id: duplicate id {template.id!r}")
        seen.add(template.id)
        _template(template, f"coupon_templates[{i}]", skus, points_on, errors)
    compensation = parts.get("compensation")
    wanted = compensation.coupon_template if compensation is not None else ""
    if wanted and wanted not in {t.id for t in templates}:
        errors.append(f"compensation.coupon_template: no coupon template {wanted!r} is defined")
