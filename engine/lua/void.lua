-- void.lua: void the unsold codes of one lot (a supplier recall).
-- KEYS[1]  the SKU's counters hash
-- KEYS[2]  the SKU's lots hash
-- KEYS[3]  the lot's code list
-- ARGV[1]  lot id
-- Returns  {voided, available}
local n = redis.call('LLEN', KEYS[3])
if n > 0 then
  redis.call('DEL', KEYS[3])
  redis.call('HINCRBY', KEYS[1], 'voided', n)
  redis.call('HINCRBY', KEYS[1], 'ver', 1)
end
redis.call('HSET', KEYS[2], ARGV[1], 0)
-- codes of this lot held at the moment are voided too when their hold ends (unwind.lua)
redis.call('HSET', KEYS[1], 'voided:' .. ARGV[1], 1)
-- `0 - n`: a Lua -0 would reach Redis as "-0", which HINCRBY refuses
local available = redis.call('HINCRBY', KEYS[1], 'available', 0 - n)
return {n, available}
