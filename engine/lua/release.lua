-- release.lua: admit tickets from the head of a SKU's overflow line into the shard's stream.
-- KEYS[1]  the SKU's overflow line
-- KEYS[2]  the shard's order stream
-- KEYS[3]  the shard's expiry index
-- KEYS[4]  the shard's set of SKUs with a non-empty overflow line
-- KEYS[5]  the shard's webhook outbox
-- KEYS[5+i] the record of ticket i
-- ARGV[1]  SKU id
-- ARGV[2]  msgpack array of the ticket order ids, in line order (as read just before)
-- ARGV[3]  now, unix milliseconds (recorded as the moment each ticket was admitted)
-- Returns  the number of tickets released. A ticket cancelled or expired since the line was
--          read is skipped; the stream entry keeps the ticket's original arrival number.
local ids = cmsgpack.unpack(ARGV[2])
local released = 0
for i, oid in ipairs(ids) do
  local record = KEYS[5 + i]
  if redis.call('ZSCORE', KEYS[1], oid) then
    local fields = redis.call('HMGET', record, 'st', 'why', 'r', 'seq', 'nu')
    if fields[1] == 'queued' and fields[2] == 'overflow' then
      redis.call('HSET', record, 'st', 'pending', 'a', ARGV[3])
      redis.call('HDEL', record, 'why', 'qexp')
      redis.call('XADD', KEYS[2], '*', 's', fields[4], 'p', fields[3])
      redis.call('ZREM', KEYS[3], oid)
      if fields[5] then
        redis.call('XADD', KEYS[5], '*', 'o', oid, 'st', 'pending', 'u', ARGV[3], 'why', '',
          'x', 0, 'p', 0)
      end
      released = released + 1
    end
    redis.call('ZREM', KEYS[1], oid)
  end
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[1])
end
return released
