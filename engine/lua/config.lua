-- config.lua: publish a config document as the fleet's running config, unless it is the one
-- already running (same digest): then nothing changes.
-- KEYS[1]  the config hash
-- ARGV[1]  digest of the validated settings, secrets included (tells versions apart; never shown)
-- ARGV[2]  the document, JSON
-- ARGV[3]  origin ("file", "api", "reload", "sighup", "watch", "boot")
-- ARGV[4]  who (admin id or process)
-- ARGV[5]  now, unix milliseconds
-- ARGV[6]  sha256 of the config file it came from ("" when not from a file)
-- ARGV[7]  the announcement channel
-- ARGV[8]  the public sha256 (over the redacted config: what readyz, metrics and the audit show)
-- Returns  {version, changed (1/0), public sha256 before}
local current = redis.call('HMGET', KEYS[1], 'digest', 'version', 'sha256')
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'file_sha256', ARGV[6])
end
if current[1] == ARGV[1] then
  return {tonumber(current[2]), 0, current[3]}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'digest', ARGV[1], 'sha256', ARGV[8], 'document', ARGV[2],
  'origin', ARGV[3], 'by', ARGV[4], 'at', ARGV[5])
redis.call('PUBLISH', ARGV[7], version)
return {version, 1, current[3] or ''}
