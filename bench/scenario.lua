-- wrk script for bench/harness.py: one run, configured by key=value arguments after `--`.
--   method=POST  body=<file>  header=Name:value (repeatable)
--   threads=<n>  (the wrk -t value)  tokens=<file>  one token per line; every request sends the next unused one as a Bearer
--                  token (each wrk thread takes every n-th line, so no token is sent twice)
-- done() prints one JSON line, prefixed with "bench-result ", that the harness parses.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("thread_index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local tokens = nil
position = 1
local base_headers = {}
static_request = nil
exhausted = 0

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  local token_file = nil
  local thread_count = 1
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    if key == "method" then
      wrk.method = value
    elseif key == "body" then
      wrk.body = read_file(value)
    elseif key == "header" then
      local name, header_value = value:match("^([^:]+):(.*)$")
      wrk.headers[name] = header_value
    elseif key == "tokens" then
      token_file = value
    elseif key == "threads" then
      thread_count = tonumber(value)
    end
  end
  for name, value in pairs(wrk.headers) do
    base_headers[name] = value
  end
  if token_file then
    tokens = {}
    local line_number = 0
    for line in io.lines(token_file) do
      if line_number % thread_count == thread_index then
        tokens[#tokens + 1] = line
      end
      line_number = line_number + 1
    end
  else
    static_request = wrk.format()
  end
end

function request()
  if tokens == nil then
    return static_request
  end
  if position > #tokens then
    -- Out of fresh tokens: count it (the harness reports the run as invalid) and wrap around.
    exhausted = exhausted + 1
    position = 1
  end
  local headers = {}
  for name, value in pairs(base_headers) do
    headers[name] = value
  end
  headers["Authorization"] = "Bearer " .. tokens[position]
  position = position + 1
  return wrk.format(nil, nil, headers)
end

function done(summary, latency, requests)
  local reused = 0
  local positions = {}
  for _, thread in ipairs(threads) do
    reused = reused + (thread:get("exhausted") or 0)
    positions[#positions + 1] = tostring(thread:get("position") or 1)
  end
  local errors = summary.errors
  io.write(string.format(
    'bench-result {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "token_wraps": %d, "token_positions": [%s]}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(99), latency.max, reused, table.concat(positions, ", ")))
end
