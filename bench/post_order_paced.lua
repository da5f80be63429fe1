-- wrk script: bench/post_order.lua with a pause before each request on a connection
-- (KG_DELAY_MS, milliseconds), to offer a chosen rate: connections / (pause + latency).
dofile(os.getenv("KG_BASE_SCRIPT"))
local pause = tonumber(os.getenv("KG_DELAY_MS") or "0")

function delay()
  return pause
end
