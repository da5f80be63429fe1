-- coupon_remind.lua: tell the buyer's storefront that an unused coupon is about to expire,
-- once.
-- KEYS[1]  the shard's coupon reminder index (coupon id -> when to remind, unix ms)
-- KEYS[2]  the coupon's hash
-- KEYS[3]  the shard's webhook outbox
-- ARGV[1]  coupon id
-- ARGV[2]  now, unix ms
-- ARGV[3]  the storefront's event group
-- ARGV[4]  the wallet's member ("<storefront>\0<buyer>")
-- Returns  1 when a coupon.expiring event was added, else 0 (the reminder is gone either way)
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local f = redis.call('HMGET', KEYS[2], 'st', 'vu')
if f[1] ~= 'active' or tonumber(f[2]) <= tonumber(ARGV[2]) then
  return 0
end
redis.call('XADD', KEYS[3], '*', 'o', ARGV[3], 'ev', 'coupon.expiring', 'w', ARGV[4],
  'cpk', KEYS[2], 'at', ARGV[2])
return 1
