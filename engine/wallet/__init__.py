"""Value that moves with an order: prices, the points ledger and coupons (reserve, post, void)."""
