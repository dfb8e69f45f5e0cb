-- wrk script: POST AppsFlyer payloads from BENCH_BODIES (one JSON per line, "__SEQ__"
-- replaced by a per-thread counter so every event is unique); count answers by status.
local bodies = {}
local seq = 0
local prefix = ""
statuses = {}
retry_after = 0

threads_list = {}
function setup(thread)
  table.insert(threads_list, thread)
  thread:set("id", #threads_list)
end

function init(args)
  prefix = tostring(id) .. "-" .. tostring(os.time())
  local path = os.getenv("BENCH_BODIES")
  for line in io.lines(path) do
    local at = string.find(line, "__SEQ__", 1, true)
    table.insert(bodies, { string.sub(line, 1, at - 1), string.sub(line, at + 7) })
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  seq = seq + 1
  local b = bodies[(seq % #bodies) + 1]
  return wrk.format(nil, nil, nil, b[1] .. prefix .. "-" .. seq .. b[2])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if headers["Retry-After"] or headers["retry-after"] then
    retry_after = retry_after + 1
  end
end

function done(summary, latency, requests)
  local counts = {}
  local ra = 0
  for _, t in ipairs(threads_list) do
    local s = t:get("statuses")
    for k, v in pairs(s) do counts[k] = (counts[k] or 0) + v end
    ra = ra + t:get("retry_after")
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format('"%d": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "statuses": {%s}, "retry_after": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, table.concat(parts, ", "), ra,
    e.connect, e.read, e.write, e.timeout))
end
