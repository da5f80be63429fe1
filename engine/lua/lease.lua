-- lease.lua: take or renew the lease on a shard (one active worker per shard).
-- KEYS[1]  the shard's lease key
-- ARGV[1]  the worker id asking
-- ARGV[2]  lease time, milliseconds
-- Returns  1 when the caller holds the lease now (taken or renewed), 0 when another does.
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
