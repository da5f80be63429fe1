-- idempotency.lua: reserve an Idempotency-Key for an order, or report who holds it.
-- KEYS[1]  the idempotency record (scoped per storefront)
-- ARGV[1]  order id to reserve it for
-- ARGV[2]  digest of the request body
-- ARGV[3]  time to live, seconds
-- Returns  {order_id, digest, created} where created is 1 when this call reserved the key and
--          0 when it was already held (then order_id and digest are the holder's).
local held = redis.call('HMGET', KEYS[1], 'o', 'h')
if held[1] then
  return {held[1], held[2], 0}
end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 'h', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {ARGV[1], ARGV[2], 1}
