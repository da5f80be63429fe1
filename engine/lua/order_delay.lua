-- order_delay.lua: tell the storefront that a ticket waits longer than its ETA said, once
-- per expectation, and expect it again at its new ETA (engine/worker/delays.py).
-- KEYS[1]  the shard's promised index (ticket -> when it counts as late, unix ms)
-- KEYS[2]  the order's record
-- KEYS[3]  the shard's webhook outbox
-- ARGV[1]  order id
-- ARGV[2]  the score this call looked at (in KEYS[1])
-- ARGV[3]  the new expectation, unix ms (0: unknown, the line is still)
-- ARGV[4]  its new score: when it is late again, or when to look again when that is unknown
-- ARGV[5]  now, unix ms
-- ARGV[6]  storefront, ARGV[7] buyer, ARGV[8] SKU
-- ARGV[9]  when it was expected (the expectation now missed), unix ms
-- Returns  1 when order.delayed was added; 0 when the ticket was decided (its expectation is
--          dropped) or another call got there first
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
if redis.call('HGET', KEYS[2], 'st') ~= 'queued' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('XADD', KEYS[3], '*', 'o', ARGV[1], 'ev', 'order.delayed', 'sf', ARGV[6],
  'by', ARGV[7], 'oid', ARGV[1], 'sku', ARGV[8], 'was', ARGV[9], 'eta', ARGV[3], 'at', ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
if ARGV[3] ~= '0' then
  redis.call('HSET', KEYS[2], 'pe', ARGV[3])
end
return 1
