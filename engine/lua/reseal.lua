-- reseal.lua: replace a run of sealed codes in a lot list with the same codes sealed anew
-- (key rotation), if the run is still where it was read. Claims pop codes from the head of
-- the list and returned holds push them back there, so a run is addressed from the tail,
-- which neither moves.
-- KEYS[1]  the lot's code list
-- ARGV[1]  offset of the run's last element from the tail (0 = the last element)
-- ARGV[2]  msgpack array of the stored values read, in list order
-- ARGV[3]  msgpack array of their replacements, same order
-- Returns  the number replaced, or -1 when the run changed since it was read.
local offset = tonumber(ARGV[1])
local old, new = cmsgpack.unpack(ARGV[2]), cmsgpack.unpack(ARGV[3])
local first = -(offset + #old)
local now = redis.call('LRANGE', KEYS[1], first, -(offset + 1))
if #now ~= #old then
  return -1
end
for i = 1, #old do
  if now[i] ~= old[i] then
    return -1
  end
end
for i = 1, #new do
  if new[i] ~= old[i] then
    redis.call('LSET', KEYS[1], first + i - 1, new[i])
  end
end
return #new
