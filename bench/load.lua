-- wrk script for the profile benchmarks. Environment:
--   TOKENS   file with one bearer token per line (requests pick one at random)
--   MODE     get | patch | mixed (90 % get, 10 % patch) | walk (GETs through the tokens in
--            file order, each once; the thread stops when every one is answered and
--            reports the time that took, so a walk shorter than -d is measured exactly;
--            with WALK_DONE set, it then creates that file, for the harness to stop wrk)
--   ROUTE    path for MODE=plain (no token), e.g. /healthz
-- Run it with one wrk thread (-t1) for MODE=walk: the order is per thread.
local tokens = {}
local mode = os.getenv("MODE") or "get"
local route = os.getenv("ROUTE") or "/user/profile"
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end
local walked, answered, walk_start = 0, 0, nil
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

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
  if mode == "walk" then
    walked = walked + 1
    if walk_start == nil then walk_start = now_us() end
    -- Past the end (the last few connections' next requests): the first user again; the
    -- thread stops as soon as the last token's answer is in, and those are not counted.
    local t = tokens[((walked - 1) % #tokens) + 1]
    return wrk.format("GET", route, { ["Authorization"] = "Bearer " .. t })
  end
  if mode == "plain" then return wrk.format("GET", route) end
  if mode == "patch" then return patch() end
  if mode == "mixed" and math.random(10) == 1 then return patch() end
  return get()
end

-- Defined only for walks: wrk parses every answer when a script has `response`.
if mode == "walk" then
  function response(status, headers, body)
    answered = answered + 1
    if answered == #tokens then
      wrk.thread:set("walk_us", now_us() - walk_start)
      wrk.thread:set("walk_n", answered)
      wrk.thread:stop()
      -- wrk itself runs for its whole -d: the harness interrupts it when this appears.
      local flag = os.getenv("WALK_DONE")
      if flag then
        local f = io.open(flag, "w")
        if f then f:write("done\n"); f:close() end
      end
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local walk_us, walk_n = 0, 0
  for _, t in ipairs(threads) do
    walk_us = math.max(walk_us, tonumber(t:get("walk_us")) or 0)
    walk_n = walk_n + (tonumber(t:get("walk_n")) or 0)
  end
  io.write(string.format(
    'RESULT {"walk_us":%d,"walk_n":%d,"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"non2xx":%d,"socket_errors":%d}\n',
    walk_us, walk_n, summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
