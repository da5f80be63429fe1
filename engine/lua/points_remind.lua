-- points_remind.lua: tell the buyer's storefront that a lot is about to expire, once.
-- KEYS[1]  the shard's reminder index ("<wallet>\0<lot>" -> when to remind, unix ms)
-- KEYS[2]  the wallet's counters (as in points_take.lua)
-- KEYS[3]  the wallet's lot expiries
-- KEYS[4]  the shard's webhook outbox
-- ARGV[1]  the reminder ("<wallet>\0<lot>")
-- ARGV[2]  now, unix ms
-- ARGV[3]  the storefront's event group in the outbox
-- Returns  1 when a points.expiring event was added; 0 when the lot is spent, expired or was
--          reminded of already (the reminder is gone either way)
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local wallet, lot = string.match(ARGV[1], '^(.*)%z([^%z]*)$')
local left = tonumber(redis.call('HGET', KEYS[2], 'l:' .. lot) or '0')
local expiry = tonumber(redis.call('ZSCORE', KEYS[3], lot) or '0')
local now = tonumber(ARGV[2])
if left <= 0 or expiry <= now then
  return 0
end
redis.call('XADD', KEYS[4], '*', 'o', ARGV[3], 'ev', 'points.expiring', 'w', wallet,
  'p', left, 'x', expiry, 'at', now)
return 1
