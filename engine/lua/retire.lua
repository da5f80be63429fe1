-- retire.lua: decided orders past the retention leave Redis: each is appended to the shard's
-- archive stream (its record's fields as kept, and 'o' its id), then its record is deleted.
-- KEYS[1]  the shard's decided stream (entry id: when the order was decided; field 'o')
-- KEYS[2]  the shard's archive stream
-- KEYS[2+i] the record of the order of entry i
-- ARGV[1]  msgpack array of {entry id, order id}, oldest first, as read just before
-- Returns  {retired, kept}. An order whose points are not settled yet (marked 'pt' without
--          'ps') is kept: its entry moves to the end of the stream, to be looked at again. An
--          order no longer final, or gone, only loses its entry.
local FINAL = {fulfilled = true, rejected = true, expired = true, cancelled = true}
local retired, kept = 0, 0
for i, item in ipairs(cmsgpack.unpack(ARGV[1])) do
  local record = KEYS[2 + i]
  local status = redis.call('HGET', record, 'st')
  if status and FINAL[status] then
    if redis.call('HEXISTS', record, 'pt') == 1 and redis.call('HEXISTS', record, 'ps') == 0 then
      redis.call('XADD', KEYS[1], '*', 'o', item[2])
      kept = kept + 1
    else
      redis.call('XADD', KEYS[2], '*', 'o', item[2], unpack(redis.call('HGETALL', record)))
      redis.call('DEL', record)
      retired = retired + 1
    end
  end
  redis.call('XDEL', KEYS[1], item[1])
end
return {retired, kept}
