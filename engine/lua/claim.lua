-- claim.lua: apply one shard batch's matching plan atomically, or refuse it whole.
-- KEYS     every key the plan touches; the plan refers to them by index (1-based):
--          per SKU its counters, lots, line and bought hashes; per order its record; per
--          filled lot its code list.
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  msgpack plan:
--          {skus   = {{counters, lots, line, bought, expected_ver}, ...},
--           orders = {{record, sku_index, expected_status, action, order_id, buyer, qty,
--                      detail, score, fills, queue_expiry_ms}, ...}}
--          action 1 = FILL, 2 = QUEUE, 3 = REJECT, 4 = HOLD
--          detail: the reject or queue reason, or the hold expiry (ms) for HOLD
--          score: the line score for QUEUE (new tickets), else 0
--          fills = {{lot_id, code_list_key_index, n}, ...} for FILL and HOLD
-- Returns  {"STALE", why} when any precondition failed (nothing written), else
--          {"OK", results} with one {order_id, status, codes, reason, position} per order.
-- Every precondition is checked before the first write: Redis never rolls a script back.
local now = ARGV[1]
local plan = cmsgpack.unpack(ARGV[2])
local FILL, QUEUE, REJECT, HOLD = 1, 2, 3, 4

-- 1. validate
for _, s in ipairs(plan.skus) do
  local ver = tonumber(redis.call('HGET', KEYS[s[1]], 'ver') or '0')
  if ver ~= s[5] then
    return {'STALE', 'stock version of ' .. KEYS[s[1]] .. ' moved'}
  end
end
local need = {}
for _, o in ipairs(plan.orders) do
  if redis.call('HGET', KEYS[o[1]], 'st') ~= o[3] then
    return {'STALE', 'order ' .. o[5] .. ' is no longer ' .. o[3]}
  end
  if o[4] == FILL or o[4] == HOLD then
    for _, f in ipairs(o[10]) do
      need[f[2]] = (need[f[2]] or 0) + f[3]
    end
  end
end
for key_index, n in pairs(need) do
  if redis.call('LLEN', KEYS[key_index]) < n then
    return {'STALE', 'lot ' .. KEYS[key_index] .. ' holds fewer than ' .. n .. ' codes'}
  end
end

-- 2. write
local results = {}
local queued = {}
for i, o in ipairs(plan.orders) do
  local record, sku, was, action, oid = KEYS[o[1]], plan.skus[o[2]], o[3], o[4], o[5]
  local counters, lots, line, bought = KEYS[sku[1]], KEYS[sku[2]], KEYS[sku[3]], KEYS[sku[4]]
  if was == 'queued' and action ~= QUEUE then
    redis.call('ZREM', line, oid)
  end
  if action == FILL or action == HOLD then
    local codes = {}
    local taken = {}
    for _, f in ipairs(o[10]) do
      local got = redis.call('LPOP', KEYS[f[2]], f[3])
      for _, c in ipairs(got) do
        codes[#codes + 1] = c
      end
      redis.call('HINCRBY', lots, f[1], -f[3])
      taken[#taken + 1] = {f[1], f[3]}
    end
    local qty = o[7]
    redis.call('HINCRBY', counters, 'available', -qty)
    redis.call('HINCRBY', bought, o[6], qty)
    local status = 'fulfilled'
    if action == HOLD then
      status = 'held'
      redis.call('HINCRBY', counters, 'held', qty)
      redis.call('HSET', record, 'hexp', o[8])
    else
      redis.call('HINCRBY', counters, 'issued', qty)
    end
    redis.call('HSET', record, 'st', status, 'u', now, 'codes', cmsgpack.pack(codes),
      'lots', cmsgpack.pack(taken))
    redis.call('HDEL', record, 'why')
    results[i] = {oid, status, codes, '', 0}
  elseif action == QUEUE then
    if was ~= 'queued' then
      redis.call('ZADD', line, o[9], oid)
      redis.call('HSET', record, 'st', 'queued', 'why', o[8], 'u', now, 'qexp', o[11])
    end
    results[i] = {oid, 'queued', {}, o[8], 0}
    queued[#queued + 1] = {i, line}
  else
    redis.call('HSET', record, 'st', 'rejected', 'why', o[8], 'u', now)
    results[i] = {oid, 'rejected', {}, o[8], 0}
  end
end
for _, s in ipairs(plan.skus) do
  redis.call('HINCRBY', KEYS[s[1]], 'ver', 1)
end
for _, q in ipairs(queued) do
  local rank = redis.call('ZRANK', q[2], results[q[1]][1])
  results[q[1]][5] = (rank or -1) + 1
end
return {'OK', results}
