-- points_take.lua: take points from a wallet, soonest-expiring lots first, or refuse whole:
-- reserved for an order (idempotent per order id), or deducted (idempotent per
-- Idempotency-Key). Record fields: engine/wallet/ledger.py.
-- KEYS[1]  the wallet's counters (balance, reserved, spent, granted, deducted, expired,
--          lot_seq, l:<lot> = points left in the lot)
-- KEYS[2]  the wallet's lot expiries (sorted set: lot -> unix ms)
-- KEYS[3]  the wallet's reservations (order id -> "R|lot:n,lot:n", "S|...", "V|...")
-- KEYS[4]  the wallet's history stream
-- KEYS[5]  the wallet's grant keys (Idempotency-Key -> "entry id|digest|balance")
-- KEYS[6]  the shard's set of wallets
-- KEYS[7]  the shard's open reservations (sorted set: "<wallet>\0<order id>" -> unix ms)
-- ARGV[1]  "reserve" or "deduct"
-- ARGV[2]  points (> 0)
-- ARGV[3]  now, unix ms
-- ARGV[4]  the wallet's member: "<storefront>\0<buyer>"
-- ARGV[5]  reserve: the order id; deduct: the Idempotency-Key ("" = none)
-- ARGV[6]  deduct: the request's digest; ARGV[7] deduct: the reason
-- Returns  {"ok", entry id, balance}; {"again", state, 0} (reserved before for this order:
--          R, S or V); {"replay", entry id, balance} or {"conflict", entry id, 0} (a deduction
--          key used before with this or another body); {"short", "", spendable} (fewer
--          unexpired points than asked: nothing written)
local mode, points, now, key = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
if mode == 'reserve' then
  local held = redis.call('HGET', KEYS[3], key)
  if held then
    return {'again', string.sub(held, 1, 1), 0}
  end
elseif key ~= '' then
  local held = redis.call('HGET', KEYS[5], key)
  if held then
    local entry, digest, balance = string.match(held, '^([^|]*)|([^|]*)|(.*)$')
    if digest == ARGV[6] then
      return {'replay', entry, tonumber(balance)}
    end
    return {'conflict', entry, 0}
  end
end
local total, lots = 0, {}
for _, lot in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')) do
  local left = tonumber(redis.call('HGET', KEYS[1], 'l:' .. lot) or '0')
  if left > 0 then
    total = total + left
    lots[#lots + 1] = {lot, left}
  end
end
if total < points then
  return {'short', '', total}
end
local need, taken = points, {}
for _, l in ipairs(lots) do
  if need == 0 then break end
  local take = math.min(need, l[2])
  redis.call('HINCRBY', KEYS[1], 'l:' .. l[1], -take)
  taken[#taken + 1] = l[1] .. ':' .. take
  need = need - take
end
local balance = redis.call('HINCRBY', KEYS[1], 'balance', -points)
redis.call('SADD', KEYS[6], ARGV[4])
local entry
if mode == 'reserve' then
  redis.call('HINCRBY', KEYS[1], 'reserved', points)
  redis.call('HSET', KEYS[3], key, 'R|' .. table.concat(taken, ','))
  redis.call('ZADD', KEYS[7], now, ARGV[4] .. '\0' .. key)
  entry = redis.call('XADD', KEYS[4], '*', 'k', 'reserve', 'p', points, 'o', key, 'r', '',
    'at', now)
else
  redis.call('HINCRBY', KEYS[1], 'deducted', points)
  entry = redis.call('XADD', KEYS[4], '*', 'k', 'deduct', 'p', points, 'o', '', 'r', ARGV[7],
    'at', now)
  if key ~= '' then
    redis.call('HSET', KEYS[5], key, entry .. '|' .. ARGV[6] .. '|' .. balance)
  end
end
return {'ok', entry, balance}
