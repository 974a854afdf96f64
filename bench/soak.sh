#!/usr/bin/env bash
# `make soak`: a long mixed load against a release build on loopback, watching for errors,
# latency drift and memory growth. Not part of CI.
#
# Seeds SOAK_USERS accounts, starts the rewards stub and `profile-api serve`, then drives
# wrk (mixed: ~89 % GET, 10 % PATCH of profile fields, 1 % PATCH of the e-mail) in
# consecutive windows of SOAK_WINDOW_SECONDS until SOAK_SECONDS have passed. Reports per
# window: requests, throughput, p50/p99/max latency, errors, and the server's RSS (VmRSS
# from /proc/PID/status, sampled every 5 s).
#
# Fails (exit 1) when any request errs (socket error or a status outside 2xx/3xx), when
# the server dies, or when RSS grows by more than SOAK_RSS_GROWTH_PCT percent over its
# value at the baseline (one minute in, or half-way for runs shorter than two minutes).
#
# Environment: SOAK_SECONDS (300), SOAK_WINDOW_SECONDS (30), SOAK_USERS (10000),
# SOAK_TOKENS (500 distinct users in the load), SOAK_CONNECTIONS (16), SOAK_THREADS (2),
# SOAK_RSS_GROWTH_PCT (20). Output also goes to bench-out/soak/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release/profile-api"
DURATION="${SOAK_SECONDS:-300}"
WINDOW="${SOAK_WINDOW_SECONDS:-30}"
USERS="${SOAK_USERS:-10000}"
TOKENS="${SOAK_TOKENS:-500}"
CONNS="${SOAK_CONNECTIONS:-16}"
THREADS="${SOAK_THREADS:-2}"
GROWTH_PCT="${SOAK_RSS_GROWTH_PCT:-20}"
OUT="$ROOT/bench-out/soak"

for v in DURATION WINDOW USERS TOKENS CONNS THREADS GROWTH_PCT; do
  if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [ "${!v}" -eq 0 ]; then
    echo "soak: $v must be a positive integer, got '${!v}'" >&2
    exit 2
  fi
done
[ "$TOKENS" -le "$USERS" ] || TOKENS="$USERS"

if ! command -v wrk >/dev/null 2>&1; then
  echo "soak: wrk not found; installing it with apt-get" >&2
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
  else
    echo "soak: install wrk (https://github.com/wg/wrk) and run again" >&2
    exit 2
  fi
fi

echo "soak: building the release binary"
(cd "$ROOT" && cargo build --release -p profile-api --quiet)

rm -rf "$OUT"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Reads "... listening on http://ADDR" from a process's stdout file.
wait_for_addr() {
  local file="$1" pid="$2"
  for _ in $(seq 1 300); do
    local line
    line="$(grep -m1 -o 'listening on http://[0-9.:]*' "$file" 2>/dev/null || true)"
    if [ -n "$line" ]; then
      echo "${line#listening on http://}"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "soak: a process did not start; see $file" >&2
  return 1
}

DB=(--main-db "$WORK/main.db" --profiles-db "$WORK/profiles.db")
SECRET="soak-secret-$RANDOM$RANDOM$RANDOM"
echo "soak: seeding $USERS users"
"$BIN" seed --users "$USERS" --orders-per-user 10 "${DB[@]}" >/dev/null

"$BIN" rewards-stub --listen 127.0.0.1:0 >"$WORK/stub.out" 2>"$OUT/stub.log" &
PIDS+=($!)
STUB_ADDR="$(wait_for_addr "$WORK/stub.out" "${PIDS[-1]}")"

RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --jwt-secret "$SECRET" "${DB[@]}" \
  --rewards-url "http://$STUB_ADDR" >"$WORK/server.out" 2>"$OUT/server.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
ADDR="$(wait_for_addr "$WORK/server.out" "$SERVER_PID")"
echo "soak: server pid $SERVER_PID on http://$ADDR, rewards stub on http://$STUB_ADDR"

# Tokens for users spread over the whole id range.
: >"$WORK/tokens"
STEP=$((USERS / TOKENS))
for i in $(seq 1 "$TOKENS"); do
  "$BIN" token --user $(((i - 1) * STEP + 1)) --ttl-s $((DURATION + 3600)) --jwt-secret "$SECRET" >>"$WORK/tokens"
done

cat >"$WORK/soak.lua" <<'LUA'
local tokens = {}
local themes = { "light", "dark", "system" }
local cities = { "London", "Paris", "Oslo", "Lisbon", "Kyoto", "Lima" }
local bools = { "true", "false" }

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end

function request()
  local h = { ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)] }
  local dice = math.random(100)
  if dice <= 89 then
    return wrk.format("GET", "/user/profile", h)
  end
  h["Content-Type"] = "application/merge-patch+json"
  local body
  if dice == 100 then
    body = string.format('{"personal":{"email":"soak-%d-%d@example.com","city":"%s"}}',
      math.random(1, 2147483647), math.random(1, 2147483647), cities[math.random(#cities)])
  else
    body = string.format(
      '{"personal":{"city":"%s"},"preferences":{"theme":"%s","notifications":{"sms":%s}}}',
      cities[math.random(#cities)], themes[math.random(3)], bools[math.random(2)])
  end
  return wrk.format("PATCH", "/user/profile", h, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
LUA

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0; }

START=$(date +%s)
(
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    echo "$(($(date +%s) - START)) $(rss_kb)"
    sleep 5
  done
) >"$OUT/rss.log" &
PIDS+=($!)

printf '%-10s %9s %8s %9s %9s %9s %7s %9s\n' window requests req/s p50_ms p99_ms max_ms errors rss_mb | tee "$OUT/windows.txt"
TOTAL_ERRORS=0
TOTAL_REQUESTS=0
elapsed=0
while [ "$elapsed" -lt "$DURATION" ]; do
  len=$((DURATION - elapsed))
  [ "$len" -gt "$WINDOW" ] && len="$WINDOW"
  result="$(wrk -t"$THREADS" -c"$CONNS" -d"${len}s" --timeout 5s -s "$WORK/soak.lua" \
    "http://$ADDR" -- "$WORK/tokens" 2>&1 | grep '^RESULT' || true)"
  if [ -z "$result" ]; then
    echo "soak: wrk produced no result in window $elapsed-$((elapsed + len)) s" >&2
    TOTAL_ERRORS=$((TOTAL_ERRORS + 1))
    break
  fi
  read -r _ reqs dur_us p50 p99 max non2xx sockerr <<<"$result"
  errors=$((non2xx + sockerr))
  TOTAL_ERRORS=$((TOTAL_ERRORS + errors))
  TOTAL_REQUESTS=$((TOTAL_REQUESTS + reqs))
  rss=$(rss_kb)
  awk -v w="$elapsed-$((elapsed + len))s" -v n="$reqs" -v d="$dur_us" -v a="$p50" -v b="$p99" \
    -v m="$max" -v e="$errors" -v r="$rss" 'BEGIN {
      printf "%-10s %9d %8d %9.2f %9.2f %9.2f %7d %9.1f\n", w, n, n * 1e6 / (d > 0 ? d : 1),
        a / 1000, b / 1000, m / 1000, e, r / 1024 }' | tee -a "$OUT/windows.txt"
  elapsed=$((elapsed + len))
  kill -0 "$SERVER_PID" 2>/dev/null || break
done

FAIL=0
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "soak: FAIL: the server died; see $OUT/server.log"
  FAIL=1
fi
echo "$(($(date +%s) - START)) $(rss_kb)" >>"$OUT/rss.log"

# Memory: the baseline is the first sample one minute in (half-way in short runs); the
# peak after it may exceed the baseline by at most GROWTH_PCT percent.
BASE_AT=60
[ "$DURATION" -lt 120 ] && BASE_AT=$((DURATION / 2))
read -r base peak <<<"$(awk -v at="$BASE_AT" '$2 > 0 && $1 >= at { if (!b) b = $2; if ($2 > p) p = $2 } END { print b + 0, p + 0 }' "$OUT/rss.log")"
echo "soak: RSS samples (s kB): $(tr '\n' ' ' <"$OUT/rss.log")"
if [ "$base" -gt 0 ]; then
  awk -v at="$BASE_AT" -v b="$base" -v p="$peak" -v lim="$GROWTH_PCT" 'BEGIN {
    printf "soak: RSS at %d s %.1f MB, peak after it %.1f MB (%+.1f %%, limit %d %%)\n",
      at, b / 1024, p / 1024, (p - b) * 100 / b, lim }'
  if [ $(((peak - base) * 100)) -gt $((base * GROWTH_PCT)) ]; then
    echo "soak: FAIL: RSS grew by more than $GROWTH_PCT %"
    FAIL=1
  fi
else
  echo "soak: FAIL: no RSS sample after $BASE_AT s"
  FAIL=1
fi
echo "soak: $TOTAL_REQUESTS requests in $DURATION s, $TOTAL_ERRORS errors"
if [ "$TOTAL_ERRORS" -gt 0 ]; then
  echo "soak: FAIL: errors during the soak; see $OUT/server.log"
  FAIL=1
fi
[ "$FAIL" -eq 0 ] && echo "soak: PASS"
exit "$FAIL"
