-- coupon_seen.lua: whether an issue key was used in the wallet before (read only); a replay
-- must not take one of a limited template's slots.
-- KEYS[1]  the wallet's keys hash (as in coupon_issue.lua)
-- ARGV[1]  the key
-- Returns  1 when it was used, else 0
return redis.call('HEXISTS', KEYS[1], 'coupon:' .. ARGV[1])
