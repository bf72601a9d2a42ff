-- reserve.lua — wrk script of overload.py: POST a 1-unit reservation of
-- $RG_WRK_SKU (one session per connection); count answers by status, 503s
-- without Retry-After or without the API's JSON "unavailable" body, and
-- answers slower than $RG_WRK_SLOW_MS; print them and latency percentiles at
-- the end. $RG_WRK_DELAY_MS (default 0): each connection waits that long
-- after an answer before its next request, so N connections offer at most
-- N * 1000 / delay requests per second however fast the answers come (a rate,
-- not "as fast as the server answers": a fast 503 must not buy more load).
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  codes = {}
  no_retry = 0
  bad_body = 0
  delay_ms = tonumber(os.getenv("RG_WRK_DELAY_MS") or "0")
  local sku = os.getenv("RG_WRK_SKU")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"sku":"' .. sku .. '","quantity":1,"session":"wrk-' .. tostring(math.random(1, 1000000)) .. '"}'
end
function delay()
  return delay_ms
end
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  if status == 503 then
    if headers["Retry-After"] == nil then no_retry = no_retry + 1 end
    if body == nil or not string.find(body, '"error"%s*:%s*"unavailable"') then
      bad_body = bad_body + 1
    end
  end
end
function done(summary, latency, requests)
  local total = {}
  local nr, bb = 0, 0
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
    nr = nr + t:get("no_retry")
    bb = bb + t:get("bad_body")
  end
  -- latency holds every request's time: count those over RG_WRK_SLOW_MS.
  local limit_us = tonumber(os.getenv("RG_WRK_SLOW_MS") or "1000") * 1000
  local over = 0
  for p = 1, 1000 do
    -- percentile(p/10) is the latency below which p/10 % of requests fall
    if latency:percentile(p / 10) > limit_us then over = over + 1 end
  end
  for k, v in pairs(total) do io.write(string.format("status %d %d\n", k, v)) end
  io.write(string.format("no_retry_after %d\nbad_503_body %d\n", nr, bb))
  io.write(string.format("slow_permille %d\n", over))
  io.write(string.format("latency_p50_ms %.1f\nlatency_p90_ms %.1f\nlatency_p99_ms %.1f\nlatency_max_ms %.1f\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
  io.write(string.format("requests %d\nseconds %.2f\n", summary.requests, summary.duration / 1e6))
end
