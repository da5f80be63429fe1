-- coupon_take.lua: reserve an order's coupons (the saga's first step, with its points), all
-- or none; idempotent per order id. Coupon fields: engine/wallet/coupons.py.
-- KEYS[1]  the wallet's reservations ("c:<order id>" -> the order's coupon ids, comma-joined)
-- KEYS[2]  the shard's open reservations (sorted set: "<wallet>\0<order id>" -> unix ms)
-- KEYS[3..] the coupons' hashes, in the order's order
-- ARGV[1]  order id
-- ARGV[2]  now, unix ms
-- ARGV[3]  the wallet's member: "<storefront>\0<buyer>"
-- ARGV[4]  the coupon ids, comma-joined (as KEYS[3..])
-- Returns  {"ok"}, {"again"} (reserved before for this order), or {"invalid", n, why} (the
--          n-th coupon may not be used now: nothing written)
local order, now = ARGV[1], tonumber(ARGV[2])
local storefront, buyer = string.match(ARGV[3], '^([^%z]*)%z(.*)$')
local again = true
for i = 3, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 'sf', 'b', 'st', 'vf', 'vu', 'o')
  if not f[1] or f[1] ~= storefront or f[2] ~= buyer then
    return {'invalid', i - 2, 'no such coupon for this buyer'}
  end
  if f[3] == 'reserved' and f[6] == order then
    -- reserved by this order already (a retry)
  elseif f[3] ~= 'active' then
    return {'invalid', i - 2, 'the coupon is ' .. f[3]}
  elseif now < tonumber(f[4]) or now >= tonumber(f[5]) then
    return {'invalid', i - 2, 'the coupon is not valid now'}
  else
    again = false
  end
end
if again then
  return {'again'}
end
for i = 3, #KEYS do
  redis.call('HSET', KEYS[i], 'st', 'reserved', 'o', order, 'u', now)
end
redis.call('HSET', KEYS[1], 'c:' .. order, ARGV[4])
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[3] .. '\0' .. order)
return {'ok'}
