-- wrk script: POST /v1/orders with a new buyer each request (same body shape for every target).
-- `wrk ... -s post_order.lua URL -- PATH` posts to PATH instead (bench.door_layers).
local counter = 0
local path = "/v1/orders"
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = id or 0
  if args[1] then path = args[1] end
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"sku":"bench-sku","qty":1,"buyer":"b-%d-%d"}', thread_id, counter)
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer bench-shop-key",
  }, body)
end

done = function(summary, latency, requests)
  io.write(string.format("JSON {\"requests\": %d, \"seconds\": %.3f, \"p50_ms\": %.3f, " ..
    "\"p99_ms\": %.3f, \"errors\": %d, \"non2xx\": %d}\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.errors.status))
end
