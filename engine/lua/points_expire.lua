-- points_expire.lua: a wallet's lots whose time is up lose what is left in them.
-- KEYS[1]  the wallet's counters (as in points_grant.lua)
-- KEYS[2]  the wallet's lot expiries
-- KEYS[3]  the wallet's history stream
-- KEYS[4]  the shard's next-expiry index
-- ARGV[1]  now, unix ms
-- ARGV[2]  the wallet's member: "<storefront>\0<buyer>"
-- Returns  the points expired
local now = tonumber(ARGV[1])
local expired = 0
for _, lot in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local left = tonumber(redis.call('HGET', KEYS[1], 'l:' .. lot) or '0')
  if left > 0 then
    expired = expired + left
    redis.call('XADD', KEYS[3], '*', 'k', 'expire', 'p', left, 'o', '', 'r', 'lot ' .. lot,
      'at', now)
  end
  redis.call('HDEL', KEYS[1], 'l:' .. lot)
  redis.call('ZREM', KEYS[2], lot)
end
if expired > 0 then
  redis.call('HINCRBY', KEYS[1], 'balance', -expired)
  redis.call('HINCRBY', KEYS[1], 'expired', expired)
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then
  redis.call('ZADD', KEYS[4], first[2], ARGV[2])
else
  redis.call('ZREM', KEYS[4], ARGV[2])
end
return expired
