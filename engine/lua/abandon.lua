-- abandon.lua: fence an order id whose points were reserved but whose order never reached its
-- shard (the door died, or stalled past the sweep's grace): from now on admit.lua refuses the
-- id ("abandoned"), so the points can be given back without a late admission fulfilling an
-- order whose points are gone. An order admitted first keeps its status.
-- KEYS[1]  the order's record (engine/store/records.py)
-- ARGV[1]  now, unix ms
-- ARGV[2]  how long the fence is kept, ms (as long as an Idempotency-Key is)
-- Returns  the record's status when the order was admitted, else "abandoned"
local status = redis.call('HGET', KEYS[1], 'st')
if status then
  return status
end
if redis.call('HSETNX', KEYS[1], 'ab', ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 'abandoned'
