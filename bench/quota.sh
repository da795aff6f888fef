#!/usr/bin/env bash
# Quota benchmark (issue 6): what the quota layer costs per request. Anonymous GET /stocks (served
# from the in-memory read cache, so the layer's share of each request is as large as it gets) with
# wrk at 64 connections, PostgreSQL, embedded feed, request log off:
#   off     both limits 0: no layer at all
#   memory  counters in this process (one sliding-day log per caller, behind a mutex)
#   redis   counters in Redis: one EVALSHA per request on a sorted set
# Limits are set far above what the run can reach, so nothing is refused (non-2xx must be 0).
# All wrk connections come from 127.0.0.1: one caller, one hot key, the worst case for contention.
# Besides throughput it prints the CPU time per request of the API process and of Redis: on this
# 2-core machine wrk, the API and Redis share the cores, so Redis's own work shows up as lost
# requests/s, where in production it runs on a machine of its own.
# Usage: bench/quota.sh [SECONDS]
# Needs: a release build (made if BOURSE_BIN is unset), wrk, PostgreSQL and Redis on 127.0.0.1.
source "$(dirname "$0")/lib.sh"
SECS="${1:-10}"
REDIS="${BOURSE_BENCH_REDIS:-redis://127.0.0.1:6379}"
LIMIT=1000000000
build
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }
redis-cli -u "$REDIS" ping >/dev/null || { echo "Redis at $REDIS does not answer" >&2; exit 1; }

new_pg_db
export BOURSE_DATABASE_URL="$PG_URL" BOURSE_LOG=warn BOURSE_DEMO=false BOURSE_REQUEST_LOG=
"$BIN" migrate >/dev/null
prefix="bourse:quota:bench-$$:"
redis_pid="$(redis-cli -u "$REDIS" info server | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # utime + stime
hz="$(getconf CLK_TCK)"
us_per_request() { awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }'; }
drop_keys() { redis-cli -u "$REDIS" --scan --pattern "${prefix}*" | xargs -r redis-cli -u "$REDIS" del >/dev/null; }

off_rps=""
run() { # label limit [redis_url]
  local port pid rps non2xx cost requests api0 api1 redis0 redis1 redis_us
  port="$(free_port)"
  BOURSE_HTTP_ADDR="127.0.0.1:$port" BOURSE_QUOTA_ANON_PER_DAY="$2" BOURSE_QUOTA_USER_PER_DAY="$2" \
    BOURSE_REDIS_URL="${3:-}" BOURSE_QUOTA_REDIS_PREFIX="$prefix" \
    "$BIN" serve >"$work/serve-$1.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_http "http://127.0.0.1:$port/readyz"
  curl -sf "http://127.0.0.1:$port/stocks" >/dev/null
  api0="$(ticks "$pid")"
  redis0="$(ticks "$redis_pid")"
  wrk -t2 -c64 -d"${SECS}s" --latency "http://127.0.0.1:$port/stocks" >"$work/wrk-$1.txt"
  api1="$(ticks "$pid")"
  redis1="$(ticks "$redis_pid")"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rps="$(awk '/Requests\/sec/ {print $2}' "$work/wrk-$1.txt")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' "$work/wrk-$1.txt")"
  requests="$(awk '/requests in/ {print $1}' "$work/wrk-$1.txt")"
  redis_us="-"
  [ -z "${3:-}" ] || redis_us="$(us_per_request $((redis1 - redis0)) "$requests")"
  if [ -z "$off_rps" ]; then
    off_rps="$rps"
    cost="—"
  else
    cost="$(awk -v off="$off_rps" -v x="$rps" 'BEGIN { printf "%.1f%%", (off - x) / off * 100 }')"
  fi
  printf '| %-8s | %10s | %8s | %8s | %7s | %7s | %12s | %14s |\n' "$1" "$rps" \
    "$(awk '$1 == "50%" {print $2}' "$work/wrk-$1.txt")" \
    "$(awk '$1 == "99%" {print $2}' "$work/wrk-$1.txt")" "${non2xx:-0}" "$cost" \
    "$(us_per_request $((api1 - api0)) "$requests")" "$redis_us"
}

echo
echo "Anonymous GET /stocks, wrk 64 connections, ${SECS}s each; cost = requests/s lost against off"
echo
echo "| quota    | requests/s | p50      | p99      | non-2xx | cost    | API CPU µs/req | Redis CPU µs/req |"
echo "|----------|------------|----------|----------|---------|---------|----------------|------------------|"
run off 0
run memory "$LIMIT"
run redis "$LIMIT" "$REDIS"
drop_keys
