-- coupon_expire.lua: end a coupon whose validity is over, once (the shard's coupon sweep).
-- KEYS[1]  the shard's coupon expiry index (coupon id -> valid until, unix ms)
-- KEYS[2]  the coupon's hash
-- ARGV[1]  coupon id
-- ARGV[2]  now, unix ms
-- ARGV[3]  when to look again at a coupon reserved by an order still undecided, unix ms
-- Returns  the coupon's status before: "active" (now expired), "expired" (ended while its
--          order was decided: only the index entry goes), "reserved" (looked at again
--          later), or another status (the index entry goes)
local f = redis.call('HMGET', KEYS[2], 'st', 'vu')
local st = f[1] or ''
if st == 'reserved' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return st
end
if st == 'active' then
  if tonumber(f[2]) > tonumber(ARGV[2]) then
    return 'valid'  -- its validity moved on: left to its own time
  end
  redis.call('HSET', KEYS[2], 'st', 'expired', 'u', ARGV[2])
end
redis.call('ZREM', KEYS[1], ARGV[1])
return st
