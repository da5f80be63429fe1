-- claim.lua: apply one shard batch's matching plan atomically, or refuse it whole; then settle
-- the batch: publish the outcomes to the front doors that wait, count, and XACK its entries.
-- KEYS     every key the plan touches; the plan refers to them by index (1-based):
--          the shard's stream, stats hash, expiry index and webhook outbox; per SKU its
--          counters, lots, line and bought hashes; per order its record; per lot its code list.
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  msgpack plan (engine/worker/claim_plan.py ClaimPlan, a map):
--          {stream, stats, expiries, outbox, issued, settle (KEYS indexes of the shard's
--           stream, stats hash, expiry index, webhook outbox, issuance audit stream and settle
--           stream: an order marked 'pt' that ends fulfilled or rejected is added there),
--           parking (KEYS index of the shard's set of non-empty parked lines; 0 when no
--           order of the plan is parked), decided (KEYS index of the shard's decided stream:
--           every order that ends fulfilled or rejected is added, for the retention),
--           issued_text (one line per order that got codes: "order_id sku status lot:n,...";
--           "" when none did), group, ack = {entry ids},
--           skus   = {{counters, expected_ver}, ...},
--           orders = {row, ...}: ClaimRow arrays (array_like), fields named below: RECORD,
--                    LINE, EXPECTED_STATUS, ACTION (1 FILL, 2 QUEUE, 3 REJECT, 4 HOLD,
--                    5 PARK: its scope is paused, it waits in PARKED_LINE), ORDER_ID,
--                    REASON (QUEUE, REJECT), EXPIRES_MS (when a HOLD ends or a QUEUE or PARK
--                    ticket expires), SCORE (QUEUE, PARK), FILLS ({{code list key, n}, ...}
--                    for FILL and HOLD), REPLY_CHANNEL, NOTIFY (true: the new state goes to
--                    the outbox), HELD_LOTS ("lot:n,..." for HOLD: where its codes go back
--                    to), ARRIVAL, PARKED_LINE (KEYS index, PARK), PARKING_MEMBER (the parked
--                    line's member of the parking set, PARK)
--           deltas = {{hash key, field, increment}, ...}   -- counters, lots, bought, summed
--           counts = {{stats field, increment}, ...},
--           late_before = unix ms (0 = off): an order made before it that gets codes now was
--                    late: fulfilled, it goes to the settle stream ('d' = 'comp') to be
--                    compensated; held, it is marked 'late' and compensated on confirm}
-- ARGV[3]  1: hand the outcomes back instead of publishing them (the worker publishes them
--          once replicas hold the claim: [redis] wait_replicas); 0 or absent: publish
-- Returns  {"STALE", why} when any precondition failed (nothing written, nothing acked), else
--          {"OK", orders decided} (with ARGV[3] = 1 followed by channel, message, ...).
--          Outcomes go out by PUBLISH, one message per channel:
--          a msgpack array of replies (engine/wire.py Reply, array_like; fields R_ORDER_ID,
--          R_STATUS, R_UPDATED_MS, R_CODES, R_REASON, R_POSITION, R_EXPIRES_MS).
-- Record fields: engine/store/records.py.
-- Every precondition is checked before the first write: Redis never rolls a script back.
-- Sums (stock counters, lot counts, buyers' purchases) come computed in the plan, so the
-- script spends its time on what only it can do: popping codes and writing records.
local now = tonumber(ARGV[1])
local plan = cmsgpack.unpack(ARGV[2])
local FILL, QUEUE, HOLD, PARK = 1, 2, 4, 5
local RECORD, LINE, EXPECTED_STATUS, ACTION, ORDER_ID, REASON, EXPIRES_MS, SCORE, FILLS,
  REPLY_CHANNEL, NOTIFY, HELD_LOTS, ARRIVAL, PARKED_LINE, PARKING_MEMBER =
  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
local R_ORDER_ID, R_STATUS, R_UPDATED_MS, R_CODES, R_REASON, R_POSITION, R_EXPIRES_MS =
  1, 2, 3, 4, 5, 6, 7

-- 1. validate
for _, s in ipairs(plan.skus) do
  if tonumber(redis.call('HGET', KEYS[s[1]], 'ver') or '0') ~= s[2] then
    return {'STALE', 'stock version of ' .. KEYS[s[1]] .. ' moved'}
  end
end
local need = {}
for _, o in ipairs(plan.orders) do
  if redis.call('HGET', KEYS[o[RECORD]], 'st') ~= o[EXPECTED_STATUS] then
    return {'STALE', 'order ' .. o[ORDER_ID] .. ' is no longer ' .. o[EXPECTED_STATUS]}
  end
  for _, f in ipairs(o[FILLS]) do
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
  local record, line, was, action, oid =
    KEYS[o[RECORD]], KEYS[o[LINE]], o[EXPECTED_STATUS], o[ACTION], o[ORDER_ID]
  if was == 'queued' and action ~= QUEUE then
    redis.call('ZREM', line, oid)
    redis.call('ZREM', expiries, oid)
  end
  local status, codes, reason, expiry = 'rejected', {}, '', 0
  if action == FILL or action == HOLD then
    local fills = o[FILLS]
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
      status, expiry = 'held', o[EXPIRES_MS]
      redis.call('HSET', record, 'st', status, 'u', now, 'codes', joined, 'lots', o[HELD_LOTS],
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
    if plan.late_before > 0 and
        tonumber(redis.call('HGET', record, 'c') or now) < plan.late_before then
      if action == HOLD then  -- compensated if it is confirmed (confirm.lua)
        redis.call('HSET', record, 'late', 1)
      else
        redis.call('XADD', KEYS[plan.settle], '*', 'o', oid, 'd', 'comp')
      end
    end
  elseif action == QUEUE then
    status, reason, expiry = 'queued', o[REASON], o[EXPIRES_MS]
    redis.call('ZADD', line, o[SCORE], oid)
    redis.call('HSET', record, 'st', status, 'why', reason, 'u', now, 'qexp', expiry,
      'seq', o[ARRIVAL])
    redis.call('ZADD', expiries, expiry, oid)
    queued[#queued + 1] = {i, line}
  elseif action == PARK then
    -- the scope is paused: a paused ticket, served in line order when the pause ends
    local parked = KEYS[o[PARKED_LINE]]
    status, reason, expiry = 'queued', 'paused', o[EXPIRES_MS]
    redis.call('ZADD', parked, o[SCORE], oid)
    redis.call('SADD', KEYS[plan.parking], o[PARKING_MEMBER])
    redis.call('HSET', record, 'st', status, 'why', reason, 'u', now, 'qexp', expiry,
      'seq', o[ARRIVAL])
    redis.call('ZADD', expiries, expiry, oid)
    queued[#queued + 1] = {i, parked}
  else
    reason = o[REASON]
    redis.call('HSET', record, 'st', status, 'why', reason, 'u', now)
  end
  results[i] = {oid, status, now, codes, reason, 0, expiry}
  if status == 'fulfilled' or status == 'rejected' then
    redis.call('XADD', KEYS[plan.decided], '*', 'o', oid)
    if redis.call('HEXISTS', record, 'pt') == 1 then
      redis.call('XADD', KEYS[plan.settle], '*', 'o', oid,
        'd', status == 'fulfilled' and 'post' or 'void')
    end
  end
end
for _, d in ipairs(plan.deltas) do
  redis.call('HINCRBY', KEYS[d[1]], d[2], d[3])
end
for _, q in ipairs(queued) do
  local reply = results[q[1]]
  reply[R_POSITION] = redis.call('ZRANK', q[2], reply[R_ORDER_ID]) + 1
end

-- 3. settle: replies per channel, outbox, counters, acknowledgement
local by_channel = {}
for i, o in ipairs(plan.orders) do
  local channel = o[REPLY_CHANNEL]
  if channel ~= '' then
    local list = by_channel[channel]
    if not list then
      list = {}
      by_channel[channel] = list
    end
    list[#list + 1] = results[i]
  end
  if o[NOTIFY] then
    local r = results[i]
    redis.call('XADD', KEYS[plan.outbox], '*', 'o', r[R_ORDER_ID], 'st', r[R_STATUS], 'u', now,
      'why', r[R_REASON], 'x', r[R_EXPIRES_MS], 'p', r[R_POSITION])
  end
end
if plan.issued_text ~= '' then
  redis.call('XADD', KEYS[plan.issued], '*', 'e', plan.issued_text)
end
local out = {'OK', #plan.orders}
for channel, list in pairs(by_channel) do
  if ARGV[3] == '1' then
    out[#out + 1] = channel
    out[#out + 1] = cmsgpack.pack(list)
  else
    redis.call('PUBLISH', channel, cmsgpack.pack(list))
  end
end
for _, c in ipairs(plan.counts) do
  redis.call('HINCRBY', KEYS[plan.stats], c[1], c[2])
end
local ack = plan.ack
for first = 1, #ack, 1000 do
  redis.call('XACK', KEYS[plan.stream], plan.group, unpack(ack, first, math.min(first + 999, #ack)))
end
return out
