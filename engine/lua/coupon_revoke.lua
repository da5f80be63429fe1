-- coupon_revoke.lua: an operator revokes an unused coupon.
-- KEYS[1]  the coupon's hash
-- KEYS[2]  the shard's coupon expiry index
-- ARGV[1]  the coupon id
-- ARGV[2]  now, unix ms
-- Returns  the coupon's status before ("" = no such coupon; "expired" for an active one past
--          its validity); only an active one within its validity becomes "revoked"
local fields = redis.call('HMGET', KEYS[1], 'st', 'vu')
local st = fields[1]
if not st then
  return ''
end
if st ~= 'active' then
  return st
end
if tonumber(fields[2]) <= tonumber(ARGV[2]) then
  return 'expired'  -- past its validity: the expiry sweep ends it
end
redis.call('HSET', KEYS[1], 'st', 'revoked', 'u', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
return st
