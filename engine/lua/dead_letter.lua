-- dead_letter.lua: end the order of a dead-lettered stream entry as rejected, reason
-- 'dead_letter', unless it was decided meanwhile (then it keeps its outcome).
-- KEYS[1]  the order's record (fields: engine/store/records.py)
-- KEYS[2]  the shard's settle stream (an order with points: give them back)
-- KEYS[3]  the shard's decided stream (the retention's index)
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  order id
-- Returns  1 when the order was rejected, 0 when it was no longer pending
if redis.call('HGET', KEYS[1], 'st') ~= 'pending' then
  return 0
end
redis.call('HSET', KEYS[1], 'st', 'rejected', 'why', 'dead_letter', 'u', ARGV[1])
redis.call('XADD', KEYS[3], '*', 'o', ARGV[2])
if redis.call('HEXISTS', KEYS[1], 'pt') == 1 then
  redis.call('XADD', KEYS[2], '*', 'o', ARGV[2], 'd', 'void')
end
return 1
