-- wrk script for bench.points: POST /v1/orders, paid with points or not.
-- `wrk ... -s post_points.lua URL -- SKU BUYERS POINTS PREFIX`: each request orders one SKU
-- for one of BUYERS buyers (PREFIX0 ... PREFIX<BUYERS-1>, in turn), with "points": POINTS
-- when POINTS > 0.
-- KG_OUTCOMES=1 also counts the answers by outcome (a response() callback: the client pays
-- for reading each body). KG_DELAY_MS=N pauses each connection before every request for a
-- random time with mean N ms (exponential: the orders of many connections together arrive as
-- a Poisson stream from the first second on), to offer a rate set by the pauses rather than
-- by the answers.
local counter = 0
local sku, buyers, points, prefix = "bench-sku", 1, 0, "pb-"
local threads = {}
local pause = tonumber(os.getenv("KG_DELAY_MS") or "0")
fulfilled, held, queued, pending, short, limited, unavailable, other = 0, 0, 0, 0, 0, 0, 0, 0
sample = ""  -- the first answer counted as "other", for the report

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  sku = args[1] or sku
  buyers = tonumber(args[2] or "1")
  points = tonumber(args[3] or "0")
  prefix = args[4] or prefix
  counter = (id or 0) * 7919
  math.randomseed(os.time() + (id or 0))
end

request = function()
  counter = counter + 1
  local paid = ""
  if points > 0 then paid = string.format(',"points":%d', points) end
  local body = string.format('{"sku":"%s","qty":1,"buyer":"%s%d"%s}',
    sku, prefix, counter % buyers, paid)
  return wrk.format("POST", "/v1/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer bench-shop-key",
  }, body)
end

-- KG_HOLD_MS=N with KG_CONNECTIONS=C: the first C pauses (one per connection) are N ms
-- longer, so that every connection is open before the first order.
local hold = tonumber(os.getenv("KG_HOLD_MS") or "0")
local held_back = tonumber(os.getenv("KG_CONNECTIONS") or "0")
if pause > 0 then
  function delay()
    local extra = 0
    if held_back > 0 then
      held_back = held_back - 1
      extra = hold
    end
    return extra + math.floor(-pause * math.log(1 - math.random()))
  end
end

local function has(body, text)
  return body ~= nil and string.find(body, text, 1, true) ~= nil
end

if os.getenv("KG_OUTCOMES") == "1" then
  function response(status, headers, body)
    if status == 201 and has(body, '"status":"fulfilled"') then fulfilled = fulfilled + 1
    elseif status == 201 then held = held + 1
    elseif status == 202 and has(body, '"status":"queued"') then queued = queued + 1
    elseif status == 202 then pending = pending + 1
    elseif status == 409 and has(body, "insufficient_points") then short = short + 1
    elseif status == 429 then limited = limited + 1
    elseif status == 503 then unavailable = unavailable + 1
    else
      other = other + 1
      if sample == "" then sample = string.format("%d %s", status, string.sub(body or "", 1, 300)) end
    end
  end
end

done = function(summary, latency, requests)
  local names = {"fulfilled", "held", "queued", "pending", "short", "limited", "unavailable",
                 "other"}
  local counts = {}
  for _, name in ipairs(names) do
    local n = 0
    for _, thread in ipairs(threads) do n = n + (thread:get(name) or 0) end
    table.insert(counts, string.format('"%s": %d', name, n))
  end
  local first = ""
  for _, thread in ipairs(threads) do
    if first == "" then first = thread:get("sample") or "" end
  end
  table.insert(counts, string.format('"sample": "%s"', string.gsub(first, '["\\%c]', "'")))
  io.write(string.format("JSON {\"requests\": %d, \"seconds\": %.3f, \"p50_ms\": %.3f, " ..
    "\"p99_ms\": %.3f, \"max_ms\": %.3f, \"errors\": %d, \"timeouts\": %d, \"non2xx\": %d, " ..
    "\"outcomes\": {%s}}\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.errors.timeout, summary.errors.status,
    table.concat(counts, ", ")))
end
