-- points_grant.lua: grant points to a wallet as a new lot, idempotent per key (an
-- Idempotency-Key, or "earn:<order id>" for what an order earned). Record fields:
-- engine/wallet/ledger.py.
-- KEYS[1]  the wallet's counters (as in points_take.lua)
-- KEYS[2]  the wallet's lot expiries (sorted set: lot -> unix ms)
-- KEYS[3]  the wallet's history stream
-- KEYS[4]  the wallet's grant keys (key -> "entry id|digest|balance")
-- KEYS[5]  the shard's set of wallets
-- KEYS[6]  the shard's next-expiry index (wallet -> unix ms of its next lot expiry)
-- KEYS[7]  the shard's webhook outbox (storefront events)
-- KEYS[8]  the shard's reminder index ("<wallet>\0<lot>" -> when to send points.expiring)
-- ARGV[1]  points (> 0)
-- ARGV[2]  kind: "grant" or "compensation"
-- ARGV[3]  reason (free text, shown in the history)
-- ARGV[4]  the lot's expiry, unix ms (0 = never)
-- ARGV[5]  now, unix ms
-- ARGV[6]  the key ("" = none)
-- ARGV[7]  digest of the request (with a key: the same key with another body is a conflict)
-- ARGV[8]  the wallet's member in KEYS[5] and KEYS[6]: "<storefront>\0<buyer>"
-- ARGV[9]  order id the grant belongs to ("" = none)
-- ARGV[10] the storefront's event group in the outbox ("" = the storefront takes no events):
--          a grant adds points.granted (compensation: compensation.granted) there
-- ARGV[11] when to remind the buyer that the lot expires, unix ms (0 = never)
-- Returns  {"ok", entry id, balance}, {"replay", entry id, balance} (the key was used with
--          this body) or {"conflict", entry id, 0} (with another body)
local NEVER = 9007199254740991
local points, expiry, now, key = tonumber(ARGV[1]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  ARGV[6]
if key ~= '' then
  local held = redis.call('HGET', KEYS[4], key)
  if held then
    local entry, digest, balance = string.match(held, '^([^|]*)|([^|]*)|(.*)$')
    if digest == ARGV[7] then
      return {'replay', entry, tonumber(balance)}
    end
    return {'conflict', entry, 0}
  end
end
local lot = tostring(redis.call('HINCRBY', KEYS[1], 'lot_seq', 1))
redis.call('HSET', KEYS[1], 'l:' .. lot, points)
redis.call('ZADD', KEYS[2], expiry > 0 and expiry or NEVER, lot)
redis.call('HINCRBY', KEYS[1], 'granted', points)
local balance = redis.call('HINCRBY', KEYS[1], 'balance', points)
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[6], first[2], ARGV[8])
redis.call('SADD', KEYS[5], ARGV[8])
local entry = redis.call('XADD', KEYS[3], '*', 'k', ARGV[2], 'p', points, 'o', ARGV[9],
  'r', ARGV[3], 'at', now)
if key ~= '' then
  redis.call('HSET', KEYS[4], key, entry .. '|' .. ARGV[7] .. '|' .. balance)
end
if ARGV[10] ~= '' then
  redis.call('XADD', KEYS[7], '*', 'o', ARGV[10],
    'ev', ARGV[2] == 'compensation' and 'compensation.granted' or 'points.granted',
    'w', ARGV[8], 'p', points, 'bal', balance, 'x', expiry, 'r', ARGV[3], 'oid', ARGV[9],
    'e', entry, 'at', now)
  local remind = tonumber(ARGV[11])
  if remind > 0 and expiry > 0 then
    redis.call('ZADD', KEYS[8], remind, ARGV[8] .. '\0' .. lot)
  end
end
return {'ok', entry, balance}
