-- stock_low.lua: a SKU's available stock fell below its low_stock (once, until it rises above
-- 1.2 x low_stock again: hysteresis): flag it and tell the storefronts (stock.low).
-- KEYS[1]  the SKU's counters hash
-- KEYS[2]  the shard's low-stock flags (hash: sku -> 1 while low)
-- KEYS[3]  the shard's webhook outbox
-- ARGV[1]  SKU id
-- ARGV[2]  low_stock
-- ARGV[3]  now, unix ms
-- ARGV[4..] the event groups of the storefronts with an events_url
-- Returns  {1, available} when it went low now, {-1, available} when it recovered now, else
--          {0, available}
local available = tonumber(redis.call('HGET', KEYS[1], 'available') or '0')
local low = tonumber(ARGV[2])
local flagged = redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
if not flagged and available < low then
  redis.call('HSET', KEYS[2], ARGV[1], 1)
  for i = 4, #ARGV do
    redis.call('XADD', KEYS[3], '*', 'o', ARGV[i], 'ev', 'stock.low', 'sf',
      string.match(ARGV[i], '^ev:([^:]*):'), 'sku', ARGV[1], 'p', available, 'x', low,
      'at', ARGV[3])
  end
  return {1, available}
end
if flagged and available > low * 1.2 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return {-1, available}
end
return {0, available}
