-- claim.lua: apply one shard batch's matching plan atomically, or refuse it whole; then settle
-- the batch: publish the outcomes to the front doors that wait, count, and XACK its entries.
-- KEYS     every key the plan touches; the plan refers to them by index (1-based):
--          the shard's stream, stats hash, expiry index and webhook outbox; per SKU its
--          counters, lots, line and bought
--          hashes; per order its record; per filled lot its code list.
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  msgpack plan:
--          {stream, stats, expiries, outbox, group, ack = {entry ids},
--           skus   = {{counters, lots, line, bought, expected_ver}, ...},
--           orders = {{record, sku_index, expected_status, action, order_id, buyer, qty,
--                      detail, score, fills, queue_expiry_ms, reply_channel, notify}, ...}}
--          notify = 1 when the order has a notify_url: its new state goes to the outbox
--          action 1 = FILL, 2 = QUEUE, 3 = REJECT, 4 = HOLD
--          detail: the reject or queue reason, or the hold expiry (ms) for HOLD
--          score: the line score for QUEUE (new tickets), else 0
--          fills = {{lot_id, code_list_key_index, n}, ...} for FILL and HOLD
-- Returns  {"STALE", why} when any precondition failed (nothing written, nothing acked), else
--          {"OK", orders decided}. Outcomes go out by PUBLISH, one message per channel:
--          a msgpack array of {order_id, status, updated_ms, codes, reason, position, expiry}.
-- Every precondition is checked before the first write: Redis never rolls a script back.
local now = tonumber(ARGV[1])
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

-- 2. write; counters are summed per SKU, lot and buyer and written once each
local results = {}
local queued = {}
local per_sku = {}
local per_lot = {}
local per_buyer = {}
local stats = {}
for i, o in ipairs(plan.orders) do
  local record, sku, was, action, oid = KEYS[o[1]], plan.skus[o[2]], o[3], o[4], o[5]
  local totals = per_sku[o[2]]
  if not totals then
    totals = {issued = 0, held = 0}
    per_sku[o[2]] = totals
  end
  if was == 'queued' and action ~= QUEUE then
    redis.call('ZREM', KEYS[sku[3]], oid)
    redis.call('ZREM', KEYS[plan.expiries], oid)
  end
  local status, codes, reason, expiry = '', {}, '', 0
  if action == FILL or action == HOLD then
    local taken = {}
    for _, f in ipairs(o[10]) do
      local got = redis.call('LPOP', KEYS[f[2]], f[3])
      for _, c in ipairs(got) do
        codes[#codes + 1] = c
      end
      local lot_key = o[2] .. '\0' .. f[1]
      per_lot[lot_key] = {sku[2], f[1], (per_lot[lot_key] and per_lot[lot_key][3] or 0) + f[3]}
      taken[#taken + 1] = {f[1], f[3]}
    end
    local buyer_key = o[2] .. '\0' .. o[6]
    per_buyer[buyer_key] = {sku[4], o[6], (per_buyer[buyer_key] and per_buyer[buyer_key][3] or 0) + o[7]}
    if action == HOLD then
      status, expiry = 'held', o[8]
      totals.held = totals.held + o[7]
      redis.call('HSET', record, 'st', status, 'u', now, 'codes', cmsgpack.pack(codes),
        'lots', cmsgpack.pack(taken), 'hexp', expiry)
      redis.call('ZADD', KEYS[plan.expiries], expiry, oid)
      codes = {}
    else
      status = 'fulfilled'
      totals.issued = totals.issued + o[7]
      redis.call('HSET', record, 'st', status, 'u', now, 'codes', cmsgpack.pack(codes),
        'lots', cmsgpack.pack(taken))
    end
    if was == 'queued' then
      redis.call('HDEL', record, 'why')
    end
  elseif action == QUEUE then
    status, reason, expiry = 'queued', o[8], o[11]
    redis.call('ZADD', KEYS[sku[3]], o[9], oid)
    redis.call('HSET', record, 'st', status, 'why', reason, 'u', now, 'qexp', expiry)
    redis.call('ZADD', KEYS[plan.expiries], expiry, oid)
    queued[#queued + 1] = {i, KEYS[sku[3]]}
  else
    status, reason = 'rejected', o[8]
    redis.call('HSET', record, 'st', status, 'why', reason, 'u', now)
  end
  stats[status] = (stats[status] or 0) + 1
  results[i] = {oid, status, now, codes, reason, 0, expiry}
end
for sku_index, totals in pairs(per_sku) do
  local counters = KEYS[plan.skus[sku_index][1]]
  local taken = totals.issued + totals.held
  if taken > 0 then
    redis.call('HINCRBY', counters, 'available', -taken)
  end
  if totals.issued > 0 then
    redis.call('HINCRBY', counters, 'issued', totals.issued)
  end
  if totals.held > 0 then
    redis.call('HINCRBY', counters, 'held', totals.held)
  end
end
for _, lot in pairs(per_lot) do
  redis.call('HINCRBY', KEYS[lot[1]], lot[2], -lot[3])
end
for _, b in pairs(per_buyer) do
  redis.call('HINCRBY', KEYS[b[1]], b[2], b[3])
end
for _, s in ipairs(plan.skus) do
  redis.call('HINCRBY', KEYS[s[1]], 'ver', 1)
end
for _, q in ipairs(queued) do
  local rank = redis.call('ZRANK', q[2], results[q[1]][1])
  results[q[1]][6] = (rank or -1) + 1
end

-- 3. settle: replies per channel, counters, acknowledgement
local by_channel = {}
for i, o in ipairs(plan.orders) do
  local channel = o[12]
  if channel ~= '' then
    local list = by_channel[channel]
    if not list then
      list = {}
      by_channel[channel] = list
    end
    list[#list + 1] = results[i]
  end
end
for channel, list in pairs(by_channel) do
  redis.call('PUBLISH', channel, cmsgpack.pack(list))
end
for i, o in ipairs(plan.orders) do
  if o[13] == 1 then
    local r = results[i]
    redis.call('XADD', KEYS[plan.outbox], '*', 'o', r[1], 'st', r[2], 'u', now, 'why', r[5],
      'x', r[7], 'p', r[6])
  end
end
local stats_key = KEYS[plan.stats]
for status, n in pairs(stats) do
  redis.call('HINCRBY', stats_key, status, n)
end
if #plan.orders > 0 then
  redis.call('HINCRBY', stats_key, 'claim_batches', 1)
  redis.call('HINCRBY', stats_key, 'claim_orders', #plan.orders)
  redis.call('HINCRBY', stats_key, 'claim_size_le_' .. plan.bucket, 1)
end
local ack = plan.ack
for first = 1, #ack, 1000 do
  redis.call('XACK', KEYS[plan.stream], plan.group, unpack(ack, first, math.min(first + 999, #ack)))
end
return {'OK', #plan.orders}
