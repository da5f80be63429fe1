-- confirm.lua: turn a held order into a fulfilled one (its codes become visible).
-- KEYS[1]  the order record
-- KEYS[2]  the SKU's counters hash
-- KEYS[3]  the shard's expiry index
-- KEYS[4]  the shard's webhook outbox
-- KEYS[5]  the shard's settle stream (an order with points: spend them; a late one:
--          compensate it)
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  qty of the order
-- ARGV[3]  order id
-- Returns  "confirmed" when the order went from held to fulfilled now; otherwise the status
--          it has ("" when unknown, "held_expired" when past its hold), and the caller answers
--          409 not_held. A held order past its expiry is not confirmed: the expiry sweep
--          returns its codes.
local st = redis.call('HGET', KEYS[1], 'st')
if st ~= 'held' then
  return st or ''
end
if tonumber(redis.call('HGET', KEYS[1], 'hexp') or '0') <= tonumber(ARGV[1]) then
  return 'held_expired'
end
local qty = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[2], 'held', -qty)
redis.call('HINCRBY', KEYS[2], 'issued', qty)
redis.call('HSET', KEYS[1], 'st', 'fulfilled', 'u', ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[3])
if redis.call('HEXISTS', KEYS[1], 'nu') == 1 then
  redis.call('XADD', KEYS[4], '*', 'o', ARGV[3], 'st', 'fulfilled', 'u', ARGV[1], 'why', '',
    'x', 0, 'p', 0)
end
if redis.call('HEXISTS', KEYS[1], 'pt') == 1 then
  redis.call('XADD', KEYS[5], '*', 'o', ARGV[3], 'd', 'post')
end
if redis.call('HEXISTS', KEYS[1], 'late') == 1 then  -- its codes came late (claim.lua)
  redis.call('XADD', KEYS[5], '*', 'o', ARGV[3], 'd', 'comp')
end
return 'confirmed'
