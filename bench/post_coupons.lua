-- wrk script for bench.coupons, one thread (-t1): orders paid with a coupon and points, or
-- coupons issued to new buyers.
-- `wrk ... -s post_coupons.lua URL -- order SKU POINTS PAIRS`: each request orders one SKU for
-- the next line of the file PAIRS ("buyer code"), paying with that coupon and POINTS points;
-- once the file is used up it starts over ("reused": those orders are refused, coupon_invalid).
-- `wrk ... -s post_coupons.lua URL -- issue TEMPLATE PREFIX`: each request issues a coupon
-- of TEMPLATE to a buyer never named before (PREFIX1, PREFIX2, ...).
-- KG_OUTCOMES=1 also counts the answers by outcome, as post_points.lua does.
local counter = 0
local mode, sku, points, template, prefix = "order", "", 0, "", ""
local lines = {}
local threads = {}
outcomes = {reused = 0}
sample = ""  -- the first answer counted as "other", for the report

local headers = {["Content-Type"] = "application/json",
                 ["Authorization"] = "Bearer bench-shop-key"}
-- status, a text the body holds, outcome: the first that matches names the answer
local kinds = {{201, '"status":"fulfilled"', "fulfilled"}, {201, '"code":"CP', "issued"},
               {201, "", "held"}, {409, "coupon_invalid", "invalid"},
               {409, "insufficient_points", "short"}, {409, "coupon_limit", "limit"},
               {429, "", "limited"}, {503, "", "unavailable"}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  if mode == "order" then
    sku, points = args[2], tonumber(args[3])
    for line in io.lines(args[4]) do
      local buyer, code = string.match(line, "^(%S+) (%S+)$")
      if buyer then table.insert(lines, {buyer, code}) end
    end
  else
    template, prefix = args[2], args[3]
  end
end

request = function()
  counter = counter + 1
  if mode ~= "order" then
    return wrk.format("POST", string.format("/v1/buyers/%s%d/coupons", prefix, counter),
                      headers, string.format('{"template":"%s"}', template))
  end
  if counter > #lines then outcomes.reused = outcomes.reused + 1 end
  local pair = lines[(counter - 1) % #lines + 1]
  return wrk.format("POST", "/v1/orders", headers, string.format(
    '{"sku":"%s","qty":1,"buyer":"%s","coupons":["%s"],"points":%d}',
    sku, pair[1], pair[2], points))
end

if os.getenv("KG_OUTCOMES") == "1" then
  function response(status, _, body)
    for _, kind in ipairs(kinds) do
      if status == kind[1] and string.find(body or "", kind[2], 1, true) then
        outcomes[kind[3]] = (outcomes[kind[3]] or 0) + 1
        return
      end
    end
    outcomes.other = (outcomes.other or 0) + 1
    if sample == "" then sample = string.format("%d %s", status, string.sub(body or "", 1, 300)) end
  end
end

done = function(summary, latency, _)
  local total, first = {}, ""
  for _, thread in ipairs(threads) do
    for name, n in pairs(thread:get("outcomes")) do total[name] = (total[name] or 0) + n end
    if first == "" then first = thread:get("sample") end
  end
  local parts = {}
  for name, n in pairs(total) do table.insert(parts, string.format('"%s": %d', name, n)) end
  table.insert(parts, string.format('"sample": "%s"', (string.gsub(first, '["\\%c]', "'"))))
  local e = summary.errors
  io.write(string.format('JSON {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, ' ..
    '"p99_ms": %.3f, "max_ms": %.3f, "errors": %d, "timeouts": %d, "non2xx": %d, ' ..
    '"outcomes": {%s}}\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect + e.read + e.write + e.timeout, e.timeout, e.status, table.concat(parts, ", ")))
end
