-- coupon_read.lua: the coupons an order names, as they are now (read only; the door checks
-- them, then coupon_take.lua reserves them, checking again).
-- KEYS[1..] the coupons' hashes
-- Returns  one flat field/value list per coupon (empty: no such coupon)
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HGETALL', KEYS[i])
end
return out
