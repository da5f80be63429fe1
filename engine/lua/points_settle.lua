-- points_settle.lua: an order was decided: spend its reserved points ("post": fulfilled) or
-- give them back to the lots they came from ("void": rejected, expired, cancelled), exactly
-- once per order id, whatever is replayed (what it earned is granted by points_grant.lua,
-- keyed "earn:<order id>").
-- KEYS[1]  the wallet's counters (as in points_grant.lua)
-- KEYS[2]  the wallet's lot expiries
-- KEYS[3]  the wallet's reservations
-- KEYS[4]  the wallet's history stream
-- KEYS[5]  the shard's open reservations
-- KEYS[6..] the hashes of the coupons it reserved (coupon_take.lua): redeemed on a post; on
--          a void active again while still valid, else expired
-- ARGV[1]  order id
-- ARGV[2]  "post" or "void"
-- ARGV[3]  now, unix ms
-- ARGV[4]  the wallet's member: "<storefront>\0<buyer>"
-- Returns  {state before (R, S, V or ""), points moved}; a reservation already spent or given
--          back is left as it is
local order, mode, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local held = redis.call('HGET', KEYS[3], order)
local state, moved = '', 0
if held then
  state = string.sub(held, 1, 1)
end
if state == 'R' then
  local lots = string.sub(held, 3)
  for lot, n in string.gmatch(lots, '([^:,]+):(%d+)') do
    moved = moved + tonumber(n)
  end
  redis.call('HINCRBY', KEYS[1], 'reserved', -moved)
  if mode == 'post' then
    redis.call('HINCRBY', KEYS[1], 'spent', moved)
    redis.call('HSET', KEYS[3], order, 'S|' .. lots)
    redis.call('XADD', KEYS[4], '*', 'k', 'spend', 'p', moved, 'o', order, 'r', '', 'at', now)
  else
    local back, lapsed = 0, 0
    for lot, n in string.gmatch(lots, '([^:,]+):(%d+)') do
      local expiry = tonumber(redis.call('ZSCORE', KEYS[2], lot) or '0')
      if expiry > now then
        redis.call('HINCRBY', KEYS[1], 'l:' .. lot, tonumber(n))
        back = back + tonumber(n)
      else
        lapsed = lapsed + tonumber(n)  -- the lot expired meanwhile: so do its points
      end
    end
    redis.call('HINCRBY', KEYS[1], 'balance', back)
    redis.call('HINCRBY', KEYS[1], 'expired', lapsed)
    redis.call('HSET', KEYS[3], order, 'V|' .. lots)
    redis.call('XADD', KEYS[4], '*', 'k', 'refund', 'p', moved, 'o', order, 'r', '', 'at', now)
    if lapsed > 0 then
      redis.call('XADD', KEYS[4], '*', 'k', 'expire', 'p', lapsed, 'o', order, 'r', '',
        'at', now)
    end
  end
end
for i = 6, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 'st', 'o', 'vu')
  if f[1] == 'reserved' and f[2] == order then
    if mode == 'post' then
      redis.call('HSET', KEYS[i], 'st', 'redeemed', 'u', now)
    elseif tonumber(f[3]) > now then
      redis.call('HSET', KEYS[i], 'st', 'active', 'u', now)
      redis.call('HDEL', KEYS[i], 'o')
    else
      redis.call('HSET', KEYS[i], 'st', 'expired', 'u', now)
    end
  end
end
redis.call('ZREM', KEYS[5], ARGV[4] .. '\0' .. order)
return {state, moved}
