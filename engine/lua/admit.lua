-- admit.lua: record newly admitted orders of one shard and append them to its stream.
-- KEYS[1]    the shard's order stream
-- KEYS[2]    the shard's arrival counter
-- KEYS[2+i]  the record of order i (one per order, in ARGV order)
-- ARGV[1]    now, unix milliseconds
-- ARGV[2]    msgpack array of {order_id, payload_length, check}; check = 1 when the order may
--            have been admitted before (an idempotent re-admit): only then is the record
--            looked up first, since a fresh random order id cannot exist yet
-- ARGV[3]    the payloads (msgpack StreamOrder each), concatenated: Lua's cmsgpack has no
--            binary type, so binary payloads travel beside the msgpack index
-- Returns    an array with, per order, its status: "pending" when admitted now, or the
--            status it already had (idempotent per order id: a second admit writes nothing).
local now = ARGV[1]
local batch = cmsgpack.unpack(ARGV[2])
local blob = ARGV[3]
local at = 1
if #KEYS ~= #batch + 2 then
  return redis.error_reply('ERR admit: ' .. #batch .. ' orders but ' .. (#KEYS - 2) .. ' record keys')
end
local out = {}
-- One INCRBY reserves the arrival numbers of the whole call; an order admitted before (a
-- re-admit) leaves a gap, which is harmless: arrival only orders, it never counts.
local seq = redis.call('INCRBY', KEYS[2], #batch) - #batch
for i, item in ipairs(batch) do
  local record = KEYS[2 + i]
  local payload = string.sub(blob, at, at + item[2] - 1)
  at = at + item[2]
  local status = item[3] == 1 and redis.call('HGET', record, 'st')
  seq = seq + 1
  if status then
    out[i] = status
  else
    redis.call('HSET', record, 'r', payload, 'st', 'pending', 'seq', seq, 'c', now)
    redis.call('XADD', KEYS[1], '*', 's', seq, 'p', payload)
    out[i] = 'pending'
  end
end
return out
