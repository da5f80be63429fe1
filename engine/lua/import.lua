-- import.lua: add one chunk of codes to a lot of a SKU, skipping codes ever seen before.
-- KEYS[1]  the SKU's counters hash (ver, imported, available, held, issued, voided)
-- KEYS[2]  the SKU's lots hash (lot -> available count)
-- KEYS[3]  the SKU's lot expiry hash (lot -> unix seconds, 0 = never)
-- KEYS[4]  the SKU's seen set (digests of every code ever imported)
-- KEYS[5]  the lot's code list
-- KEYS[6]  the shard's order stream (a "run the line" entry is appended when codes were added)
-- KEYS[7]  the shard's fingerprint record (check, plain_before): engine/store/fingerprint.py
-- ARGV[1]  lot id
-- ARGV[2]  lot expiry, unix seconds (0 = never)
-- ARGV[3]  SKU id
-- ARGV[4]  msgpack array, one item per code (engine/stock/importer.py ImportItem, array_like):
--          DIGEST (its fingerprint), CODE (as stored), PLAIN_DIGEST (its unkeyed digest, or ""
--          for an unkeyed import): when codes were recorded unkeyed before sealing was turned
--          on, a code whose DIGEST or PLAIN_DIGEST is in the seen set is a duplicate
-- ARGV[5]  the importer's fingerprint check ("plain", or the keyed digest of a fixed probe)
-- ARGV[6]  1 when the fleet's record says codes were once recorded unkeyed
-- Returns  {added, duplicates, available}; added = -1: the lot id was voided, -2: the shard's
--          codes were recorded under another fingerprint (nothing added either way)
local DIGEST, CODE, PLAIN_DIGEST = 1, 2, 3
local lot, expiry, sku = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HEXISTS', KEYS[1], 'voided:' .. lot) == 1 then
  -- a recalled lot id stays recalled: codes it still has held are voided when they return
  return {-1, 0, tonumber(redis.call('HGET', KEYS[1], 'available') or '0')}
end
local recorded = redis.call('HGET', KEYS[7], 'check')
if not recorded then
  redis.call('HSET', KEYS[7], 'check', ARGV[5])
  if ARGV[6] == '1' then
    redis.call('HSET', KEYS[7], 'plain_before', 1)
  end
elseif recorded ~= ARGV[5] then
  if recorded ~= 'plain' or ARGV[5] == 'plain' then
    return {-2, 0, tonumber(redis.call('HGET', KEYS[1], 'available') or '0')}
  end
  redis.call('HSET', KEYS[7], 'check', ARGV[5], 'plain_before', 1)  -- sealing turned on
end
local plain_too = redis.call('HEXISTS', KEYS[7], 'plain_before') == 1
local codes = cmsgpack.unpack(ARGV[4])
local added, duplicates = 0, 0
for _, item in ipairs(codes) do
  local seen_plain = plain_too and item[PLAIN_DIGEST] ~= '' and
    redis.call('SISMEMBER', KEYS[4], item[PLAIN_DIGEST]) == 1
  if not seen_plain and redis.call('SADD', KEYS[4], item[DIGEST]) == 1 then
    redis.call('RPUSH', KEYS[5], item[CODE])
    added = added + 1
  else
    duplicates = duplicates + 1
  end
end
if added > 0 then
  redis.call('HINCRBY', KEYS[2], lot, added)
  if redis.call('HEXISTS', KEYS[3], lot) == 0 or tonumber(expiry) ~= 0 then
    redis.call('HSET', KEYS[3], lot, expiry)
  end
  redis.call('HINCRBY', KEYS[1], 'imported', added)
  redis.call('HINCRBY', KEYS[1], 'ver', 1)
  redis.call('XADD', KEYS[6], '*', 'kick', sku)
end
local available = redis.call('HINCRBY', KEYS[1], 'available', added)
return {added, duplicates, available}
