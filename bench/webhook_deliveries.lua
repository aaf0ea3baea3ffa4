-- wrk script: POST pre-signed Svix deliveries, each line of the file once.
--   wrk -s bench/webhook_deliveries.lua URL -- <file> <wrk threads>
-- Each line is "svix-id<TAB>svix-timestamp<TAB>svix-signature<TAB>body"; thread n of t takes
-- lines n, n+t, n+2t, ... When a thread runs out it starts over (the gateway answers those as
-- duplicates) and counts them in "reused", which the bench reports as a sizing error.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  requests_ = {}
  local n = 0
  for line in io.lines(path) do
    if n % nthreads == tid then
      local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      requests_[#requests_ + 1] = wrk.format("POST", "/webhooks/clerk", {
        ["svix-id"] = id, ["svix-timestamp"] = ts, ["svix-signature"] = sig,
        ["Content-Type"] = "application/json",
      }, body)
    end
    n = n + 1
  end
  pos = 0
  sent = 0
  reused = 0
end

function request()
  pos = pos + 1
  sent = sent + 1
  if pos > #requests_ then
    pos = 1
    reused = reused + 1
  end
  return requests_[pos]
end

function done(summary, latency, requests)
  local sent_total, reused_total = 0, 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
    reused_total = reused_total + thread:get("reused")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "sent": %d, "reused": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, sent_total, reused_total,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
