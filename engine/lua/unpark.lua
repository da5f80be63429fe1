-- unpark.lua: a pause (or a maintenance window that queued orders) has ended: move tickets
-- from a parked line to their SKU's overflow line,
-- keeping their place (tier, then arrival), from where they are admitted at the line's rate.
-- KEYS[1]  the parked line (one storefront's tickets for one SKU)
-- KEYS[2]  the SKU's overflow line
-- KEYS[3]  the shard's set of SKUs with a non-empty overflow line
-- KEYS[4]  the shard's set of non-empty parked lines
-- KEYS[5]  the shard's review line (for tickets marked 'rq': they still need a review)
-- KEYS[5+i] the record of ticket i
-- ARGV[1]  SKU id
-- ARGV[2]  the parked line's member in KEYS[4] ("<storefront>:<sku>")
-- ARGV[3]  msgpack array of the ticket order ids, in line order (as read just before)
-- Returns  the number of tickets moved to the overflow line. One cancelled or expired since
--          the read is skipped.
local ids = cmsgpack.unpack(ARGV[3])
local moved = 0
for i, oid in ipairs(ids) do
  local score = redis.call('ZSCORE', KEYS[1], oid)
  if score then
    local fields = redis.call('HMGET', KEYS[5 + i], 'st', 'why', 'rq')
    if fields[1] == 'queued' and (fields[2] == 'paused' or fields[2] == 'maintenance') then
      if fields[3] then
        redis.call('HSET', KEYS[5 + i], 'why', 'review')
        redis.call('HDEL', KEYS[5 + i], 'rq')
        redis.call('ZADD', KEYS[5], score, oid)
      else
        redis.call('HSET', KEYS[5 + i], 'why', 'overflow')
        redis.call('ZADD', KEYS[2], score, oid)
        moved = moved + 1
      end
    end
    redis.call('ZREM', KEYS[1], oid)
  end
end
if moved > 0 then
  redis.call('SADD', KEYS[3], ARGV[1])
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[2])
end
return moved
