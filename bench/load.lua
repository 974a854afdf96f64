-- wrk script for the profile benchmarks. Environment:
--   TOKENS   file with one bearer token per line (requests pick one at random)
--   MODE     get | patch | mixed (90 % get, 10 % patch)
--   ROUTE    path for MODE=plain (no token), e.g. /healthz
local tokens = {}
local mode = os.getenv("MODE") or "get"
local route = os.getenv("ROUTE") or "/user/profile"
local themes = { "light", "dark", "system" }
local bools = { "true", "false" }

function init(args)
  local path = os.getenv("TOKENS")
  if path then
    for line in io.lines(path) do
      if #line > 0 then tokens[#tokens + 1] = line end
    end
  end
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end

local function auth()
  return { ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)] }
end

local function get()
  return wrk.format("GET", route, auth())
end

local function patch()
  local h = auth()
  h["Content-Type"] = "application/merge-patch+json"
  local body = string.format(
    '{"preferences":{"theme":"%s","notifications":{"sms":%s,"marketing":%s}}}',
    themes[math.random(3)], bools[math.random(2)], bools[math.random(2)])
  return wrk.format("PATCH", route, h, body)
end

function request()
  if mode == "plain" then return wrk.format("GET", route) end
  if mode == "patch" then return patch() end
  if mode == "mixed" and math.random(10) == 1 then return patch() end
  return get()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
