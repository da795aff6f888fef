#!/usr/bin/env bash
# What the quota layer costs the API process, in instructions per request (valgrind's callgrind):
# a count that is the same from run to run whatever else the machine does, where requests/s
# (bench/quota.sh) moves by 10% between runs on a shared 2-core machine. The API runs under
# callgrind; one keep-alive client sends N anonymous GET /stocks (from the read cache) one after
# the other, after a warm-up; the counters are zeroed before and dumped after, so start-up is not
# counted. Modes: off (no layer), memory, redis (limits too high to refuse, unless
# QUOTA_BENCH_LIMIT sets them). With one request at a time every Redis check is a script call of
# its own: the cost without batching (an upper bound: under load the calls are shared,
# bench/quota.sh counts how many). At QUOTA_BENCH_LIMIT=100 the caller is refused after its
# 100th request, by the replica itself until the release: the requests count as 429s.
# Usage: bench/quota-instructions.sh [REQUESTS]
# Needs: a release build (made if BOURSE_BIN is unset), valgrind, PostgreSQL and Redis.
source "$(dirname "$0")/lib.sh"
N="${1:-2000}"
REDIS="${BOURSE_BENCH_REDIS:-redis://127.0.0.1:6379}"
LIMIT="${QUOTA_BENCH_LIMIT:-1000000000}"
build
need valgrind
need_redis "$REDIS"

new_pg_db
# One simulated tick at start and none after (one every 1000 s): a tick empties the read cache,
# and the requests that then render from the database would count into whichever mode ran
# longer under valgrind.
export BOURSE_DATABASE_URL="$PG_URL" BOURSE_LOG=warn BOURSE_DEMO=false BOURSE_REQUEST_LOG= \
  BOURSE_FEED_RATE=0.001
"$BIN" migrate >/dev/null
prefix="bourse:quota:instructions-$$:"

requests() { # port count -> sends count GET /stocks on one keep-alive connection
  python3 - "$1" "$2" <<'PY'
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    conn.request("GET", "/stocks")
    response = conn.getresponse()
    response.read()
    if response.status not in (200, 429):
        sys.exit(f"GET /stocks answered {response.status}")
PY
}

measure() { # mode limit [redis_url] -> instructions per request
  local port pid out="$work/callgrind-$1"
  port="$(free_port)"
  BOURSE_HTTP_ADDR="127.0.0.1:$port" BOURSE_QUOTA_ANON_PER_DAY="$2" BOURSE_QUOTA_USER_PER_DAY="$2" \
    BOURSE_REDIS_URL="${3:-}" BOURSE_QUOTA_REDIS_PREFIX="$prefix" \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" serve >"$work/serve-$1.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_http "http://127.0.0.1:$port/readyz" 300
  requests "$port" 300
  callgrind_control -z "$pid" >/dev/null
  requests "$port" "$N"
  callgrind_control -d "$pid" >/dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  # The dump made on request is the largest file (the one at exit holds the shutdown only).
  callgrind_annotate "$(ls -S "$out" "$out".* 2>/dev/null | head -1)" 2>/dev/null |
    awk -v n="$N" '/PROGRAM TOTALS/ { gsub(",", "", $1); printf "%.0f\n", $1 / n; exit }'
}

off="$(measure off 0)"
memory="$(measure memory "$LIMIT")"
redis="$(measure redis "$LIMIT" "$REDIS")"
redis-cli -u "$REDIS" --scan --pattern "${prefix}*" | xargs -r redis-cli -u "$REDIS" del >/dev/null
echo
echo "API instructions per anonymous GET /stocks (callgrind, $N requests one at a time)"
echo
echo "| quota | instructions/request | added by the layer |"
echo "|---|---|---|"
printf '| off | %s | — |\n' "$off"
for row in "memory $memory" "redis, one script call per request $redis"; do
  set -- $row
  value="${*: -1}"
  label="${row% *}"
  printf '| %s | %s | %s (%s) |\n' "$label" "$value" "$((value - off))" \
    "$(awk -v a="$value" -v b="$off" 'BEGIN { printf "+%.1f%%", (a - b) / b * 100 }')"
done
