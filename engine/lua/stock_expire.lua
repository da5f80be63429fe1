-- stock_expire.lua: take the unsold codes of a lot past its expiry off sale: they leave
-- `available` for `expired` (C1: imported = available + held + issued + voided + expired).
-- Codes of the lot held when it expires come back to it when their hold ends, and are taken
-- off by the next call.
-- KEYS[1]  the SKU's counters hash
-- KEYS[2]  the SKU's lots hash
-- KEYS[3]  the SKU's lot expiries (hash: lot -> unix seconds)
-- KEYS[4]  the lot's code list
-- ARGV[1]  lot id
-- ARGV[2]  now, unix seconds
-- Returns  the codes taken off (0 when the lot is not past its expiry, or empty)
local expiry = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if expiry == 0 or expiry > tonumber(ARGV[2]) then
  return 0
end
local n = redis.call('LLEN', KEYS[4])
if n == 0 then
  return 0
end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[2], ARGV[1], 0)
redis.call('HINCRBY', KEYS[1], 'available', 0 - n)
redis.call('HINCRBY', KEYS[1], 'expired', n)
redis.call('HINCRBY', KEYS[1], 'ver', 1)
return n
