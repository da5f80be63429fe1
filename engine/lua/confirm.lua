-- confirm.lua: turn a held order into a fulfilled one (its codes become visible). Codes of a
-- lot recalled (voided) while the order was held are voided and replaced with codes of other
-- lots, taken from the front of the candidates in the order given (the matching order); when
-- too few are left, nothing is written and the caller cancels the order (reason recalled).
-- KEYS[1]  the order record
-- KEYS[2]  the SKU's counters hash
-- KEYS[3]  the shard's expiry index
-- KEYS[4]  the shard's webhook outbox
-- KEYS[5]  the shard's settle stream (an order with points: spend them; a late one:
--          compensate it)
-- KEYS[6]  the SKU's lots hash
-- KEYS[7]  the shard's issuance audit stream (a swap: "order_id sku fulfilled lot:n,...")
-- KEYS[8]  the shard's decided stream (the retention's index)
-- KEYS[9..] the code lists of the lots that may replace recalled codes (ARGV[5..] their ids)
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  qty of the order
-- ARGV[3]  order id
-- ARGV[4]  SKU id
-- ARGV[5..] the candidate lots' ids, in the order to take from
-- Returns  "confirmed" when the order went from held to fulfilled now; "recalled" when codes
--          of a recalled lot cannot be replaced (nothing written); otherwise the status it
--          has ("" when unknown, "held_expired" when past its hold), and the caller answers
--          409 not_held. A held order past its expiry is not confirmed: the expiry sweep
--          returns its codes.
local st = redis.call('HGET', KEYS[1], 'st')
if st ~= 'held' then
  return st or ''
end
if tonumber(redis.call('HGET', KEYS[1], 'hexp') or '0') <= tonumber(ARGV[1]) then
  return 'held_expired'
end
local fields = redis.call('HMGET', KEYS[1], 'codes', 'lots')
local codes, kept, kept_lots, recalled, at = {}, {}, {}, 0, 1
for code in string.gmatch(fields[1] or '', '[^\n]+') do
  codes[#codes + 1] = code
end
for lot, count in string.gmatch(fields[2] or '', '([^,]+):(%d+)') do
  local n = tonumber(count)
  if redis.call('HEXISTS', KEYS[2], 'voided:' .. lot) == 1 then
    recalled = recalled + n
  else
    for j = at, at + n - 1 do
      kept[#kept + 1] = codes[j]
    end
    kept_lots[#kept_lots + 1] = lot .. ':' .. n
  end
  at = at + n
end
if recalled > 0 then
  local need, takes = recalled, {}
  for i = 5, #ARGV do
    if need == 0 then
      break
    end
    if redis.call('HEXISTS', KEYS[2], 'voided:' .. ARGV[i]) == 0 then
      local take = math.min(need, redis.call('LLEN', KEYS[i + 4]))
      if take > 0 then
        takes[#takes + 1] = {i, take}
        need = need - take
      end
    end
  end
  if need > 0 then
    return 'recalled'
  end
  local swapped = {}
  for _, t in ipairs(takes) do
    for _, code in ipairs(redis.call('LPOP', KEYS[t[1] + 4], t[2])) do
      kept[#kept + 1] = code
    end
    redis.call('HINCRBY', KEYS[6], ARGV[t[1]], -t[2])
    kept_lots[#kept_lots + 1] = ARGV[t[1]] .. ':' .. t[2]
    swapped[#swapped + 1] = ARGV[t[1]] .. ':' .. t[2]
  end
  redis.call('XADD', KEYS[7], '*', 'e',
    ARGV[3] .. ' ' .. ARGV[4] .. ' fulfilled ' .. table.concat(swapped, ','))
  -- the recalled codes are voided; as many others leave the shelf in their place
  redis.call('HINCRBY', KEYS[2], 'available', -recalled)
  redis.call('HINCRBY', KEYS[2], 'voided', recalled)
  redis.call('HINCRBY', KEYS[2], 'ver', 1)
  redis.call('HSET', KEYS[1], 'codes', table.concat(kept, '\n'),
    'lots', table.concat(kept_lots, ','))
end
local qty = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[2], 'held', -qty)
redis.call('HINCRBY', KEYS[2], 'issued', qty)
redis.call('HSET', KEYS[1], 'st', 'fulfilled', 'u', ARGV[1])
redis.call('XADD', KEYS[8], '*', 'o', ARGV[3])
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
