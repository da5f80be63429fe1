-- coupon_slot.lua: take or give back one of a limited template's `total` coupons. The counter
-- has a hash tag of its own, so a campaign is limited across every shard; a crash between
-- taking a slot and issuing the coupon loses the slot (never over-issues).
-- KEYS[1]  the template's counter (coupons ever issued)
-- ARGV[1]  "take" or "give"
-- ARGV[2]  total
-- Returns  1 when a slot was taken (or given back), 0 when none is left
if ARGV[1] == 'give' then
  redis.call('DECR', KEYS[1])
  return 1
end
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[2]) then
  return 0
end
redis.call('INCR', KEYS[1])
return 1
