-- admit.lua: record newly admitted orders of one shard and append them to its stream, or give
-- them a ticket in their SKU's overflow line.
-- KEYS[1]    the shard's order stream
-- KEYS[2]    the shard's arrival counter
-- KEYS[3]    the shard's expiry index (sorted set: order id by expiry, unix ms)
-- KEYS[4]    the shard's set of SKUs whose overflow line is not empty
-- KEYS[5]    the shard's webhook outbox
-- KEYS[6]    the shard's set of parked lines that are not empty
-- KEYS[6+i]  the record of order i (i = 1..n)
-- KEYS[6+n+j] the j-th line of the call: a SKU's overflow line, a parked line, the review line
-- ARGV[1]    now, unix milliseconds
-- ARGV[2]    msgpack array, one item per order (engine/door/ingest.py AdmitItem, array_like):
--            ORDER_ID, PAYLOAD_LENGTH, TICKET (the door wants a ticket: a capacity bucket was
--            empty, why "overflow"; the scope is paused, why "paused", or a maintenance
--            window queues it, why "maintenance", PARKING naming the parked line's member
--            of KEYS[6]; or the order needs review, why "review"),
--            SCORE_BASE (line_score(tier, 0): the ticket's score is SCORE_BASE + arrival),
--            SKU, TTL_MS (how long a ticket may wait), NOTIFY (it has a notify_url: marked
--            'nu' on its record, its changes go to the outbox), LINE (j: its line is
--            KEYS[6+n+j]), WHY, PARKING, REVIEW (a paused ticket, marked 'rq', that goes to
--            review when the pause ends), SETTLE (its decision moves points: marked 'pt' on
--            its record, so the scripts that decide it tell the shard's settle stream).
--            Every record is looked up first: racing requests of one Idempotency-Key can
--            admit one order id twice.
-- ARGV[3]    the payloads (msgpack StreamOrder each), concatenated: Lua's cmsgpack has no
--            binary type, so binary payloads travel beside the msgpack index
-- ARGV[4]    the waiting room's capacity per line (0 = no waiting room: no overflow tickets;
--            paused and reviewed orders are tickets whatever their line's length)
-- Returns    per order {status, position}: "pending" (in the stream), "queued" (a ticket in
--            the overflow line, at position), "full" (over capacity and the line is full:
--            nothing written), "abandoned" (fenced by abandon.lua: nothing written), or the
--            status an earlier admit left (idempotent per order id).
-- An order never overtakes the line: while a SKU's overflow line is not empty, its new
-- orders join the line too, so tickets are admitted in arrival order. Paused and review
-- tickets wait in lines of their own and never hold up the overflow line.
-- Record fields: engine/store/records.py.
local ORDER_ID, PAYLOAD_LENGTH, TICKET, SCORE_BASE, SKU, TTL_MS, NOTIFY, LINE, WHY, PARKING,
  REVIEW, SETTLE = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
local now = tonumber(ARGV[1])
local batch = cmsgpack.unpack(ARGV[2])
local blob = ARGV[3]
local capacity = tonumber(ARGV[4])
local n = #batch
local at = 1
local out = {}
-- One INCRBY reserves the arrival numbers of the whole call; an order admitted before (a
-- re-admit) leaves a gap, which is harmless: arrival only orders, it never counts.
local seq = redis.call('INCRBY', KEYS[2], n) - n
local waiting = {}
for i, item in ipairs(batch) do
  local record, line, why = KEYS[6 + i], KEYS[6 + n + item[LINE]], item[WHY]
  local payload = string.sub(blob, at, at + item[PAYLOAD_LENGTH] - 1)
  at = at + item[PAYLOAD_LENGTH]
  seq = seq + 1
  -- always looked up: racing requests of one Idempotency-Key can admit one id twice
  local status = redis.call('HGET', record, 'st')
  if status then
    out[i] = {status, 0}
  elseif redis.call('HEXISTS', record, 'ab') == 1 then
    out[i] = {'abandoned', 0}  -- fenced by abandon.lua: its points were given back
  else
    local length = waiting[line]
    if length == nil then
      length = redis.call('ZCARD', line)
      waiting[line] = length
    end
    if item[TICKET] or (why == 'overflow' and length > 0) then
      -- without a waiting room (capacity 0) only overflow is refused: a paused or reviewed
      -- order still waits, as a ticket
      if length >= capacity and (why == 'overflow' or capacity > 0) then
        out[i] = {'full', 0}
      else
        local expiry = now + item[TTL_MS]
        redis.call('HSET', record, 'r', payload, 'st', 'queued', 'why', why, 'seq', seq,
          'c', now, 'qexp', expiry)
        redis.call('ZADD', line, item[SCORE_BASE] + seq, item[ORDER_ID])
        redis.call('ZADD', KEYS[3], expiry, item[ORDER_ID])
        if why == 'overflow' then
          redis.call('SADD', KEYS[4], item[SKU])
        elseif why == 'paused' or why == 'maintenance' then
          redis.call('SADD', KEYS[6], item[PARKING])
          if item[REVIEW] then
            redis.call('HSET', record, 'rq', 1)
          end
        end
        waiting[line] = length + 1
        local position = redis.call('ZRANK', line, item[ORDER_ID]) + 1
        out[i] = {'queued', position}
        if item[NOTIFY] then
          redis.call('HSET', record, 'nu', 1)
          redis.call('XADD', KEYS[5], '*', 'o', item[ORDER_ID], 'st', 'queued', 'u', now,
            'why', why, 'x', expiry, 'p', position)
        end
      end
    else
      -- arrival ('seq') is written when the order becomes a ticket; admission time is 'c'
      if item[NOTIFY] then
        redis.call('HSET', record, 'r', payload, 'st', 'pending', 'c', now, 'nu', 1)
      else
        redis.call('HSET', record, 'r', payload, 'st', 'pending', 'c', now)
      end
      redis.call('XADD', KEYS[1], '*', 's', seq, 'p', payload)
      out[i] = {'pending', 0}
    end
    if item[SETTLE] and out[i][1] ~= 'full' then
      redis.call('HSET', record, 'pt', 1)
    end
  end
end
return out
