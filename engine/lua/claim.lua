-- claim.lua: apply one shard batch's matching plan atomically, or refuse it whole; then settle
-- the batch: publish the outcomes to the front doors that wait, count, and XACK its entries.
-- KEYS     every key the plan touches; the plan refers to them by index (1-based):
--          the shard's stream, stats hash, expiry index and webhook outbox; per SKU its
--          counters, lots, line and bought hashes; per order its record; per lot its code list.
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  msgpack plan:
--          {stream, stats, expiries, outbox, group, ack = {entry ids},
--           issued (the shard's issuance audit stream), issued_text (one line per order that
--           got codes: "order_id sku status lot:n,lot:n"; "" when none did),
--           skus   = {{counters, expected_ver}, ...},
--           orders = {{record, line, expected_status, action, order_id, qty, detail, score,
--                      fills, queue_expiry_ms, reply_channel, notify, lots_text,
--                      arrival}, ...},
--           deltas = {{hash key, field, increment}, ...}   -- counters, lots, bought, summed
--           counts = {{stats field, increment}, ...}}
--          action 1 = FILL, 2 = QUEUE, 3 = REJECT, 4 = HOLD
--          detail: the reject or queue reason, or the hold expiry (ms) for HOLD
--          score: the line score for QUEUE (new tickets), else 0
--          fills = {{code_list_key, n}, ...} for FILL and HOLD
--          lots_text: "lot:n,lot:n" for HOLD (where its codes go back to), else ""
--          notify = 1 when the order has a notify_url: its new state goes to the outbox
-- Returns  {"STALE", why} when any precondition failed (nothing written, nothing acked), else
--          {"OK", orders decided}. Outcomes go out by PUBLISH, one message per channel:
--          a msgpack array of {order_id, status, updated_ms, codes, reason, position, expiry}.
-- Every precondition is checked before the first write: Redis never rolls a script back.
-- Sums (stock counters, lot counts, buyers' purchases) come computed in the plan, so the
-- script spends its time on what only it can do: popping codes and writing records.
local now = tonumber(ARGV[1])
local plan = cmsgpack.unpack(ARGV[2])
local FILL, QUEUE, HOLD = 1, 2, 4

-- 1. validate
for _, s in ipairs(plan.skus) do
  if tonumber(redis.call('HGET', KEYS[s[1]], 'ver') or '0') ~= s[2] then
    return {'STALE', 'stock version of ' .. KEYS[s[1]] .. ' moved'}
  end
end
local need = {}
for _, o in ipairs(plan.orders) do
  if redis.call('HGET', KEYS[o[1]], 'st') ~= o[3] then
    return {'STALE', 'order ' .. o[5] .. ' is no longer ' .. o[3]}
  end
  for _, f in ipairs(o[9]) do
    need[f[1]] = (need[f[1]] or 0) + f[2]
  end
end
for key_index, n in pairs(need) do
  if redis.call('LLEN', KEYS[key_index]) < n then
    return {'STALE', 'lot ' .. KEYS[key_index] .. ' holds fewer than ' .. n .. ' codes'}
  end
end

-- 2. write
local expiries = KEYS[plan.expiries]
local results = {}
local queued = {}
for i, o in ipairs(plan.orders) do
  local record, line, was, action, oid = KEYS[o[1]], KEYS[o[2]], o[3], o[4], o[5]
  if was == 'queued' and action ~= QUEUE then
    redis.call('ZREM', line, oid)
    redis.call('ZREM', expiries, oid)
  end
  local status, codes, reason, expiry = 'rejected', {}, '', 0
  if action == FILL or action == HOLD then
    local fills = o[9]
    if #fills == 1 then
      codes = redis.call('LPOP', KEYS[fills[1][1]], fills[1][2])
    else
      for _, f in ipairs(fills) do
        for _, c in ipairs(redis.call('LPOP', KEYS[f[1]], f[2])) do
          codes[#codes + 1] = c
        end
      end
    end
    -- codes never hold a newline (imports refuse them), so a newline joins them
    local joined = table.concat(codes, '\n')
    if action == HOLD then
      status, expiry = 'held', o[7]
      redis.call('HSET', record, 'st', status, 'u', now, 'codes', joined, 'lots', o[13],
        'hexp', expiry)
      redis.call('ZADD', expiries, expiry, oid)
      codes = {}
    else
      status = 'fulfilled'
      redis.call('HSET', record, 'st', status, 'u', now, 'codes', joined)
    end
    if was == 'queued' then
      redis.call('HDEL', record, 'why')
    end
  elseif action == QUEUE then
    status, reason, expiry = 'queued', o[7], o[10]
    redis.call('ZADD', line, o[8], oid)
    redis.call('HSET', record, 'st', status, 'why', reason, 'u', now, 'qexp', expiry,
      'seq', o[14])
    redis.call('ZADD', expiries, expiry, oid)
    queued[#queued + 1] = {i, line}
  else
    reason = o[7]
    redis.call('HSET', record, 'st', status, 'why', reason, 'u', now)
  end
  results[i] = {oid, status, now, codes, reason, 0, expiry}
end
for _, d in ipairs(plan.deltas) do
  redis.call('HINCRBY', KEYS[d[1]], d[2], d[3])
end
for _, q in ipairs(queued) do
  results[q[1]][6] = redis.call('ZRANK', q[2], results[q[1]][1]) + 1
end

-- 3. settle: replies per channel, outbox, counters, acknowledgement
local by_channel = {}
for i, o in ipairs(plan.orders) do
  local channel = o[11]
  if channel ~= '' then
    local list = by_channel[channel]
    if not list then
      list = {}
      by_channel[channel] = list
    end
    list[#list + 1] = results[i]
  end
  if o[12] == 1 then
    local r = results[i]
    redis.call('XADD', KEYS[plan.outbox], '*', 'o', r[1], 'st', r[2], 'u', now, 'why', r[5],
      'x', r[7], 'p', r[6])
  end
end
if plan.issued_text ~= '' then
  redis.call('XADD', KEYS[plan.issued], '*', 'e', plan.issued_text)
end
for channel, list in pairs(by_channel) do
  redis.call('PUBLISH', channel, cmsgpack.pack(list))
end
for _, c in ipairs(plan.counts) do
  redis.call('HINCRBY', KEYS[plan.stats], c[1], c[2])
end
local ack = plan.ack
for first = 1, #ack, 1000 do
  redis.call('XACK', KEYS[plan.stream], plan.group, unpack(ack, first, math.min(first + 999, #ack)))
end
return {'OK', #plan.orders}
