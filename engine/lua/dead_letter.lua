-- dead_letter.lua: end the order of a dead-lettered stream entry as rejected, reason
-- 'dead_letter', unless it was decided meanwhile (then it keeps its outcome).
-- KEYS[1]  the order's record (fields: engine/store/records.py)
-- ARGV[1]  now, unix milliseconds
-- Returns  1 when the order was rejected, 0 when it was no longer pending
if redis.call('HGET', KEYS[1], 'st') ~= 'pending' then
  return 0
end
redis.call('HSET', KEYS[1], 'st', 'rejected', 'why', 'dead_letter', 'u', ARGV[1])
return 1
