-- take.lua: take up to n tokens from a fleet-wide token bucket.
-- KEYS[1]  the bucket (hash: tokens, stamp)
-- ARGV[1]  now, unix milliseconds (the caller's clock; every caller uses wall time)
-- ARGV[2]  rate, tokens per second
-- ARGV[3]  burst
-- ARGV[4]  n, the most tokens wanted
-- Returns  the tokens granted (0 to n).
local now, rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = tonumber(state[1]), tonumber(state[2])
if tokens == nil then
  tokens, stamp = burst, now
end
if now > stamp then
  tokens = math.min(burst, tokens + (now - stamp) * rate / 1000)
  stamp = now
end
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', stamp)
redis.call('PEXPIRE', KEYS[1], 3600000)
return granted
