-- wrk script: the Fleet overview's refresh callback, as a signed-in browser sends it.
--
-- bench/load.py writes the request (the exact /_dash-update-component body the page sends,
-- the session cookies and the CSRF header) to files and passes their paths in the environment:
--   BENCH_BODY      file with the JSON body
--   BENCH_COOKIE    file with the Cookie header value
--   BENCH_CSRF      file with the X-CSRF-TOKEN header value
--   BENCH_DELAY_MS  think time between a connection's requests (a viewer's refresh interval);
--                   0 or unset: send the next request as soon as the answer arrives
--   BENCH_OUT       file the summary is written to (JSON)

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

wrk.method = "POST"
wrk.body = slurp(os.getenv("BENCH_BODY"))
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Cookie"] = slurp(os.getenv("BENCH_COOKIE"))
wrk.headers["X-CSRF-TOKEN"] = slurp(os.getenv("BENCH_CSRF"))

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0

-- Called after each answer: how long this connection waits before its next request. Viewers
-- refresh every delay_ms on average, spread over +-50 % so they do not fall into step (the
-- first requests of all connections go out together, like screens switched on at once).
function delay()
  if delay_ms <= 0 then
    return 0
  end
  return math.random(math.floor(delay_ms * 0.5), math.floor(delay_ms * 1.5))
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}, "latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, ' ..
    '"p90": %d, "p95": %d, "p99": %d}}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99))
  local f = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  f:write(out)
  f:close()
end
