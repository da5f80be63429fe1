-- config.lua: publish a config document as the fleet's running config, unless it is the one
-- already running (same sha256): then nothing changes.
-- KEYS[1]  the config hash
-- ARGV[1]  sha256 of the validated settings
-- ARGV[2]  the document, JSON
-- ARGV[3]  origin ("file", "api", "reload", "sighup", "watch", "boot")
-- ARGV[4]  who (admin id or process)
-- ARGV[5]  now, unix milliseconds
-- ARGV[6]  sha256 of the config file it came from ("" when not from a file)
-- ARGV[7]  the announcement channel
-- Returns  {version, changed (1/0), sha256 before}
local current = redis.call('HMGET', KEYS[1], 'sha256', 'version')
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'file_sha256', ARGV[6])
end
if current[1] == ARGV[1] then
  return {tonumber(current[2]), 0, current[1]}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'sha256', ARGV[1], 'document', ARGV[2], 'origin', ARGV[3],
  'by', ARGV[4], 'at', ARGV[5])
redis.call('PUBLISH', ARGV[7], version)
return {version, 1, current[1] or ''}
