-- pause_mark.lua: mark a moment of a pause of the config once for the whole fleet (announced
-- ahead, started), and for an announcement tell the storefronts concerned (pause.scheduled).
-- KEYS[1]  the marks hash of shard 0 (mark -> unix ms after which it may be forgotten)
-- KEYS[2]  shard 0's webhook outbox
-- ARGV[1]  the mark ("scheduled|<scope>|<starts ms>" or "started|<scope>|<starts ms>")
-- ARGV[2]  when it may be forgotten, unix ms
-- ARGV[3]  now, unix ms
-- ARGV[4]  scope; ARGV[5] reason; ARGV[6] starts, unix ms; ARGV[7] ends, unix ms (0: open)
-- ARGV[8]  exempt tiers ("8,9"); ARGV[9] action (queue | reject)
-- ARGV[10..] the event groups of the storefronts to tell (none: only the mark)
-- Returns  1 when marked now, 0 when it was marked before (nothing written)
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
for i = 10, #ARGV do
  redis.call('XADD', KEYS[2], '*', 'o', ARGV[i], 'ev', 'pause.scheduled', 'sf',
    string.match(ARGV[i], '^ev:([^:]*):'), 'scope', ARGV[4], 'r', ARGV[5], 'p', ARGV[6],
    'x', ARGV[7], 'tiers', ARGV[8], 'act', ARGV[9], 'at', ARGV[3])
end
return 1
