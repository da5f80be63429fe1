-- cancel.lua: cancel a pending, queued or held order.
-- KEYS[1]  the order record
-- KEYS[2]  the SKU's waiting line
-- KEYS[3]  the SKU's counters hash
-- KEYS[4]  the SKU's lots hash
-- KEYS[5]  the SKU's bought hash
-- KEYS[6]  the shard's order stream (a "run the line" entry when held codes return)
-- KEYS[7..] the code lists of the lots the held codes came from, in the order of the record's
--          'lots' field
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  SKU id
-- ARGV[3]  buyer of the order
-- ARGV[4]  qty of the order
-- ARGV[5]  order id
-- Returns  {status_before, status_after}; status_after equals status_before when the order
--          could not be cancelled (fulfilled, rejected, expired) or was already cancelled.
local record = KEYS[1]
local now, sku = ARGV[1], ARGV[2]
local st = redis.call('HGET', record, 'st')
if not st then
  return {'', ''}
end
if st == 'pending' then
  redis.call('HSET', record, 'st', 'cancelled', 'why', 'cancelled', 'u', now)
elseif st == 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[5])
  redis.call('HSET', record, 'st', 'cancelled', 'why', 'cancelled', 'u', now)
  redis.call('HINCRBY', KEYS[3], 'ver', 1)
elseif st == 'held' then
  local fields = redis.call('HMGET', record, 'codes', 'lots')
  local codes = cmsgpack.unpack(fields[1])
  local lots = cmsgpack.unpack(fields[2])
  local at = 1
  for i, pair in ipairs(lots) do
    local lot, n = pair[1], pair[2]
    for j = at + n - 1, at, -1 do
      redis.call('LPUSH', KEYS[6 + i], codes[j])
    end
    at = at + n
    redis.call('HINCRBY', KEYS[4], lot, n)
  end
  local qty = tonumber(ARGV[4])
  redis.call('HINCRBY', KEYS[3], 'held', -qty)
  redis.call('HINCRBY', KEYS[3], 'available', qty)
  redis.call('HINCRBY', KEYS[3], 'ver', 1)
  redis.call('HINCRBY', KEYS[5], ARGV[3], -qty)
  redis.call('HSET', record, 'st', 'cancelled', 'why', 'cancelled', 'u', now)
  redis.call('HDEL', record, 'codes')
  redis.call('XADD', KEYS[6], '*', 'kick', sku)
else
  return {st, st}
end
return {st, 'cancelled'}
