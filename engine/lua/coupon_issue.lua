-- coupon_issue.lua: issue one coupon to a buyer at a storefront, within the template's
-- per-buyer limit, idempotent per key; the coupon's terms are copied from its template so
-- that editing the template later never changes a coupon issued. Record fields:
-- engine/wallet/coupons.py.
-- KEYS[1]  the wallet's keys hash ("coupon:<key>" -> "coupon id|digest"; "issued:<template>"
--          -> coupons of the template ever issued to this buyer)
-- KEYS[2]  the wallet's coupons (sorted set: coupon id -> unix ms issued)
-- KEYS[3]  the new coupon's hash
-- KEYS[4]  the shard's coupon expiry index
-- KEYS[5]  the shard's webhook outbox (coupon.issued)
-- KEYS[6]  the shard's set of wallets
-- KEYS[7]  the shard's coupon reminder index (coupon.expiring)
-- ARGV[1]  template id          ARGV[2]  per_buyer (0 = any number)
-- ARGV[3]  key ("" = none)      ARGV[4]  digest of the request (the same key, another body:
--                                        a conflict)
-- ARGV[5]  now, unix ms         ARGV[6]  the coupon's id (the digest of its code)
-- ARGV[7]  the code as stored (sealed when [codes] keys are set)
-- ARGV[8]  valid from, unix ms  ARGV[9]  valid until, unix ms
-- ARGV[10] the storefront's event group ("" = no events)
-- ARGV[11] the wallet's member ("<storefront>\0<buyer>")
-- ARGV[12..20] the terms: kind, amount, percent, max_discount, min_spend, skus (comma-joined),
--          category, stackable (1/0), recycle_points
-- ARGV[21] when to remind the buyer that it expires, unix ms (0 = never)
-- Returns  {"ok", coupon id}, {"replay", coupon id} (the key with this body), {"conflict",
--          coupon id} (another body), {"limit", issued so far} (per_buyer reached; nothing
--          written)
local key, now, id = ARGV[3], tonumber(ARGV[5]), ARGV[6]
if key ~= '' then
  local held = redis.call('HGET', KEYS[1], 'coupon:' .. key)
  if held then
    local first, digest = string.match(held, '^([^|]*)|(.*)$')
    return {digest == ARGV[4] and 'replay' or 'conflict', first}
  end
end
local per_buyer = tonumber(ARGV[2])
local issued = tonumber(redis.call('HGET', KEYS[1], 'issued:' .. ARGV[1]) or '0')
if per_buyer > 0 and issued >= per_buyer then
  return {'limit', tostring(issued)}
end
redis.call('HINCRBY', KEYS[1], 'issued:' .. ARGV[1], 1)
local storefront, buyer = string.match(ARGV[11], '^([^%z]*)%z(.*)$')
redis.call('HSET', KEYS[3], 'c', ARGV[7], 't', ARGV[1], 'sf', storefront, 'b', buyer,
  'st', 'active', 'at', now, 'vf', ARGV[8], 'vu', ARGV[9], 'k', ARGV[12], 'a', ARGV[13],
  'pc', ARGV[14], 'md', ARGV[15], 'ms', ARGV[16], 'skus', ARGV[17], 'cat', ARGV[18],
  'stk', ARGV[19], 'rp', ARGV[20])
redis.call('ZADD', KEYS[2], now, id)
redis.call('ZADD', KEYS[4], ARGV[9], id)
redis.call('SADD', KEYS[6], ARGV[11])
if key ~= '' then
  redis.call('HSET', KEYS[1], 'coupon:' .. key, id .. '|' .. ARGV[4])
end
if ARGV[10] ~= '' then
  redis.call('XADD', KEYS[5], '*', 'o', ARGV[10], 'ev', 'coupon.issued', 'w', ARGV[11],
    'cpk', KEYS[3], 'at', now)
  if tonumber(ARGV[21]) > now then
    redis.call('ZADD', KEYS[7], ARGV[21], id)
  end
end
return {'ok', id}
