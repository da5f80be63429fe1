-- unwind.lua: end a waiting order early: cancel it (DELETE, or a recall at confirm) or
-- expire it (its time is up).
-- Pending orders are only marked (the worker skips them); queued ones leave their line; held
-- ones give their codes back to their lots, front first (codes of a lot voided meanwhile
-- are voided instead), and the line is run again.
-- KEYS[1]  the order record
-- KEYS[2]  the SKU's waiting line (sold out)
-- KEYS[3]  the line a ticket of another reason waits in (overflow, parked or review)
-- KEYS[4]  the shard's expiry index
-- KEYS[5]  the SKU's counters hash
-- KEYS[6]  the SKU's lots hash
-- KEYS[7]  the SKU's bought hash
-- KEYS[8]  the shard's order stream
-- KEYS[9]  the shard's webhook outbox
-- KEYS[10] the shard's settle stream (an order with points: give them back)
-- KEYS[11] the shard's decided stream (the retention's index)
-- KEYS[12..] the code lists of the lots a held order's codes came from, in the order of the
--          record's 'lots' field
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  "cancel", "expire", or "recall" (a held order whose recalled codes cannot be
--          replaced at confirm: cancelled with reason recalled)
-- ARGV[3]  order id
-- ARGV[4]  SKU id
-- ARGV[5]  buyer
-- ARGV[6]  qty
-- Returns  {status_before, status_after}; status_after equals status_before when nothing
--          changed: a final order, or (expire) one that is not due yet.
local record, now, mode, oid = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
local fields = redis.call('HMGET', record, 'st', 'qexp', 'hexp', 'codes', 'lots', 'nu', 'pt')
local st = fields[1]
if not st then
  return {'', ''}
end
local ending = mode == 'expire' and 'expired' or 'cancelled'
local why = mode == 'recall' and 'recalled' or ending
if mode == 'recall' and st ~= 'held' then
  return {st, st}
end
if st == 'pending' and mode == 'cancel' then
  -- nothing else to undo: the worker finds it cancelled and leaves it
elseif st == 'queued' then
  if mode == 'expire' and tonumber(fields[2] or '0') > now then
    return {st, st}
  end
  redis.call('ZREM', KEYS[2], oid)
  redis.call('ZREM', KEYS[3], oid)
  redis.call('HINCRBY', KEYS[5], 'ver', 1)
elseif st == 'held' then
  if mode == 'expire' and tonumber(fields[3] or '0') > now then
    return {st, st}
  end
  local codes = {}
  for code in string.gmatch(fields[4], '[^\n]+') do
    codes[#codes + 1] = code
  end
  local at, i, voided = 1, 0, 0
  for lot, count in string.gmatch(fields[5], '([^,]+):(%d+)') do
    i = i + 1
    local n = tonumber(count)
    if redis.call('HEXISTS', KEYS[5], 'voided:' .. lot) == 1 then
      voided = voided + n  -- recalled while held: never back on sale
    else
      for j = at + n - 1, at, -1 do
        redis.call('LPUSH', KEYS[11 + i], codes[j])
      end
      redis.call('HINCRBY', KEYS[6], lot, n)
    end
    at = at + n
  end
  local qty = tonumber(ARGV[6])
  redis.call('HINCRBY', KEYS[5], 'held', -qty)
  redis.call('HINCRBY', KEYS[5], 'available', qty - voided)
  if voided > 0 then
    redis.call('HINCRBY', KEYS[5], 'voided', voided)
  end
  redis.call('HINCRBY', KEYS[5], 'ver', 1)
  redis.call('HINCRBY', KEYS[7], ARGV[5], -qty)
  redis.call('HDEL', record, 'codes')
  redis.call('XADD', KEYS[8], '*', 'kick', ARGV[4])
else
  return {st, st}
end
redis.call('ZREM', KEYS[4], oid)
redis.call('HSET', record, 'st', ending, 'why', why, 'u', now)
redis.call('XADD', KEYS[11], '*', 'o', oid)
if fields[6] then
  redis.call('XADD', KEYS[9], '*', 'o', oid, 'st', ending, 'u', now, 'why', why, 'x', 0,
    'p', 0)
end
if fields[7] then
  redis.call('XADD', KEYS[10], '*', 'o', oid, 'd', 'void')
end
return {st, ending}
